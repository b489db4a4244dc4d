/* Classify handwritten digits with the MLP that nnjit exported to libmlp.so: plain C, no
 * Python at run time.
 *
 *   ./classify digits.txt        one digit per line: its label, then 64 pixels (0..16)
 *
 * For each digit it calls mlp_predict() (the trained network, compiled by nnjit's LLVM backend)
 * and prints the predicted class and its probability; the first digit is also drawn. */
#include <stdio.h>
#include <stdlib.h>

#include "libmlp.h"

#define NPIX 64
#define NCLASS 10

static void draw(const float *pixels) {
    static const char shades[] = " .:-=+*#%@";
    for (int r = 0; r < 8; r++) {
        printf("    ");
        for (int c = 0; c < 8; c++) {
            int level = (int)(pixels[r * 8 + c] * 9.0f / 16.0f + 0.5f);
            putchar(shades[level]);
            putchar(shades[level]);
        }
        putchar('\n');
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIGITS.txt\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    /* The arena holds the compiled code's temporaries; one is enough for sequential calls. */
    size_t arena_bytes = (MLP_PREDICT_ARENA_BYTES + MLP_PREDICT_ARENA_ALIGN - 1)
                         / MLP_PREDICT_ARENA_ALIGN * MLP_PREDICT_ARENA_ALIGN;
    void *arena = aligned_alloc(MLP_PREDICT_ARENA_ALIGN, arena_bytes ? arena_bytes : 64);
    if (!arena) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    float pixels[NPIX], probs[NCLASS];
    int64_t predicted;
    int label, n = 0, right = 0;
    while (fscanf(f, "%d", &label) == 1) {
        for (int i = 0; i < NPIX; i++) {
            int v;
            if (fscanf(f, "%d", &v) != 1) {
                fprintf(stderr, "%s: digit %d has fewer than %d pixels\n", argv[1], n, NPIX);
                return 1;
            }
            pixels[i] = (float)v;
        }
        mlp_predict(pixels, &predicted, probs, arena);
        if (n == 0) {
            printf("digit 0 (label %d):\n", label);
            draw(pixels);
        }
        printf("digit %2d: predicted %lld (p=%.3f), label %d%s\n", n, (long long)predicted,
               probs[predicted], label, predicted == label ? "" : "   <- wrong");
        right += predicted == label;
        n++;
    }
    fclose(f);
    free(arena);
    if (n == 0) {
        fprintf(stderr, "%s: no digits\n", argv[1]);
        return 1;
    }
    printf("%d/%d correct\n", right, n);
    return 0;
}
