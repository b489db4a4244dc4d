"""The memory plan as an SVG timeline: kernels across (one tick each, numbered and named), arena
offset down, each temporary a box spanning the kernels it is live in. Labels are in the picture:
a box says its buffer's name and size where they fit, and a legend lists every buffer; the
liveness lower bound is a labelled dashed line."""
from __future__ import annotations

import html
from typing import Sequence

from ..codegen.memory_plan import MemoryPlan

_CHAR_W = 6.2          # px per character at font-size 11 (Helvetica), for fitting labels


def memory_svg(plan: MemoryPlan, title: str = "memory plan",
               kernel_names: Sequence[str] = ()) -> str:
    """The picture of `plan`; `kernel_names` (the program's kernels, in order) label the ticks."""
    steps = max(plan.num_kernels, 1)
    left, top, plot_h = 90, 48, 360      # NOTE: _kernel_ticks places its title by plot_h
    plot_w = max(640, 16 * steps)
    sx, sy = plot_w / steps, plot_h / max(plan.arena_bytes, 1)
    bufs = sorted(plan.buffers, key=lambda b: (b.start, b.offset))
    # rotated 45 degrees, a tick label reaches 0.72 of its length to the right of its tick
    reach = max(left + (i + 0.5) * sx + 10 + 0.72 * _CHAR_W * len(_tick(i, kernel_names))
                for i in range(steps))
    legend_x = max(left + plot_w + 30, reach + 10)
    name_w = max([len(_legend(b)) for b in bufs] + [30]) * _CHAR_W
    names_h = 8 + _CHAR_W * max([len(_tick(i, kernel_names)) for i in range(steps)] + [4]) * 0.72
    width = int(legend_x + name_w + 40)
    height = int(max(top + plot_h + names_h + 40, top + 40 + 15 * len(bufs)))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
           f'font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="20" font-size="14" font-weight="bold">{html.escape(title)}: '
           f'arena {_size(plan.arena_bytes)}, liveness lower bound '
           f'{_size(plan.lower_bound_bytes)}, without reuse {_size(plan.no_reuse_bytes)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f9fafb" '
           f'stroke="#9ca3af"/>']
    out += _kernel_ticks(steps, kernel_names, left, top + plot_h, sx)
    out += _offset_axis(plan.arena_bytes, left, top, plot_h)
    for i, b in enumerate(bufs):
        x, y = left + b.start * sx, top + b.offset * sy
        bw, bh = max((b.end - b.start + 1) * sx - 1, 1), max(b.nbytes * sy, 1)
        color = _color(i)
        out.append(f'<rect class="buffer" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                   f'height="{bh:.1f}" fill="{color}" fill-opacity="0.8" stroke="#1f2937" '
                   f'stroke-width="0.6"><title>{html.escape(_legend(b))}</title></rect>')
        out += _box_label(b, x, y, bw, bh)
    lb = top + plan.lower_bound_bytes * sy
    out.append(f'<line x1="{left}" y1="{lb:.1f}" x2="{left + plot_w}" y2="{lb:.1f}" '
               f'stroke="#111827" stroke-width="1.2" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{left + plot_w - 4}" y="{lb - 4:.1f}" text-anchor="end" '
               f'font-weight="bold">liveness lower bound {_size(plan.lower_bound_bytes)}</text>')
    out += _legend_block(bufs, legend_x, top)
    out.append("</svg>")
    return "\n".join(out)


def _kernel_ticks(steps: int, names: Sequence[str], left: float, y0: float,
                  sx: float) -> list[str]:
    out = [f'<text x="{left + steps * sx}" y="{y0 - 366}" text-anchor="end" fill="#6b7280">'
           'kernels (time) &#8594;</text>']
    every = max(1, round(12 / sx))          # keep labels at least ~12 px apart
    for i in range(steps):
        x = left + (i + 0.5) * sx
        major = i % every == 0
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + (6 if major else 3)}" '
                   f'stroke="#374151"/>')
        if major:
            out.append(f'<text class="tick" x="{x:.1f}" y="{y0 + 10}" font-size="10" '
                       f'transform="rotate(45 {x:.1f} {y0 + 10})">'
                       f'{html.escape(_tick(i, names))}</text>')
    return out


def _tick(i: int, names: Sequence[str]) -> str:
    if i >= len(names):
        return str(i)
    return names[i] if names[i].startswith(f"k{i}_") else f"{i} {names[i]}"


def _offset_axis(arena: int, left: float, top: float, plot_h: float) -> list[str]:
    out = [f'<text x="{left - 8}" y="{top - 6}" text-anchor="end" fill="#374151">offset</text>']
    for q in range(5):
        y = top + plot_h * q / 4
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" '
                   f'stroke="#374151"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
                   f'{_size(arena * q // 4)}</text>')
    return out


def _box_label(b, x: float, y: float, bw: float, bh: float) -> list[str]:
    """The buffer's name (and size, when two lines fit) inside its box."""
    lines = [b.name, _size(b.nbytes)] if bh >= 26 else [f"{b.name} {_size(b.nbytes)}"]
    if bh < 12 or max(len(s) for s in lines) * _CHAR_W > bw - 4:
        lines = [b.name]
        if bh < 12 or len(b.name) * _CHAR_W > bw - 4:
            return []
    return [f'<text x="{x + 3:.1f}" y="{y + 11 + 13 * j:.1f}" fill="#111827">'
            f'{html.escape(s)}</text>' for j, s in enumerate(lines)]


def _legend_block(bufs, x: float, top: float) -> list[str]:
    out = [f'<text x="{x}" y="{top - 6}" font-weight="bold">buffers (size, live kernels, '
           'offset)</text>']
    for i, b in enumerate(bufs):
        y = top + 4 + 15 * i
        out.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{_color(i)}" '
                   f'stroke="#1f2937" stroke-width="0.6"/>')
        out.append(f'<text class="legend" x="{x + 15}" y="{y + 9}">'
                   f'{html.escape(_legend(b))}</text>')
    return out


def _legend(b) -> str:
    return f"{b.name} {_size(b.nbytes)}, kernels {b.start}..{b.end}, +{b.offset}"


def _color(i: int) -> str:
    """Distinct, light enough for black text: hues a golden angle apart."""
    return f"hsl({(i * 137.508) % 360:.0f}, 70%, 68%)"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"
