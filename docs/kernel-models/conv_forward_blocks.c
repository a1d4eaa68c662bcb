/* A C model of lenet's forward convolution kernel (src/layers/conv.rs,
 * forward_block): tiles of 16 examples in one AVX-512 register, a register block of
 * MO output channels by MX output columns, 5x5 kernel, stride 1, no padding, no
 * activation. It times the given block shapes in turns (40 rounds, best of each), so
 * that a drifting VM clock affects them alike. Used to choose conv2's 4x5 blocks
 * (docs/perf.md, change 17).
 *
 *   gcc -O3 -march=native conv_forward_blocks.c -o conv_forward_blocks
 *   ./conv_forward_blocks C SIDE O REPS MO MX [MO MX ...]
 *   ./conv_forward_blocks 6 14 16 50 8 2 4 5    # conv2 of d2l: 6x14x14 -> 16x10x10
 *   ./conv_forward_blocks 1 32 6 30 6 4 3 7     # conv1 of d2l: 1x32x32 (padded) -> 6x28x28
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define L 16
#define K 5
static int C, H, W, O, OH, OW;
static float *xp, *w, *out;

#define BLOCK(MO, MX)                                                                         \
  static void __attribute__((noinline)) blk_##MO##_##MX(int o0, int y, int x0) {              \
    __m512 acc[MO][MX];                                                                       \
    for (int a = 0; a < MO; a++)                                                              \
      for (int b = 0; b < MX; b++) acc[a][b] = _mm512_setzero_ps();                           \
    int kk = C * K * K;                                                                       \
    for (int ci = 0; ci < C; ci++)                                                            \
      for (int ki = 0; ki < K; ki++) {                                                        \
        const float *xr = xp + ((ci * H + y + ki) * W + x0) * L;                              \
        const float *wr = w + o0 * kk + (ci * K + ki) * K;                                    \
        for (int kj = 0; kj < K; kj++) {                                                      \
          __m512 xv[MX];                                                                      \
          for (int b = 0; b < MX; b++) xv[b] = _mm512_load_ps(xr + (b + kj) * L);             \
          for (int a = 0; a < MO; a++) {                                                      \
            __m512 wv = _mm512_set1_ps(wr[a * kk + kj]);                                      \
            for (int b = 0; b < MX; b++) acc[a][b] = _mm512_fmadd_ps(wv, xv[b], acc[a][b]);   \
          }                                                                                   \
        }                                                                                     \
      }                                                                                       \
    for (int a = 0; a < MO; a++)                                                              \
      for (int b = 0; b < MX; b++) _mm512_store_ps(out + (((o0 + a) * OH + y) * OW + x0 + b) * L, acc[a][b]); \
  }
#define SHAPES(X) X(8, 2) X(8, 3) X(4, 5) X(6, 4) X(4, 4) X(3, 7) X(2, 7) X(2, 5) X(2, 10) X(6, 2)
SHAPES(BLOCK)

typedef void (*block_fn)(int, int, int);
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 7 || (argc - 5) % 2) {
    fprintf(stderr, "usage: %s C SIDE O REPS MO MX [MO MX ...]\n", argv[0]);
    return 2;
  }
  C = atoi(argv[1]); H = W = atoi(argv[2]); O = atoi(argv[3]); OH = H - K + 1; OW = W - K + 1;
  int reps = atoi(argv[4]), nv = (argc - 5) / 2;
  block_fn fs[16]; int mos[16], mxs[16]; double best[16];
  for (int v = 0; v < nv && v < 16; v++) {
    int mo = atoi(argv[5 + 2 * v]), mx = atoi(argv[6 + 2 * v]);
    block_fn f = 0;
#define PICK(a, b) if (mo == a && mx == b) f = blk_##a##_##b;
    SHAPES(PICK)
    if (!f || O % mo || OW % mx) { fprintf(stderr, "no %dx%d block for %d channels, width %d\n", mo, mx, O, OW); return 2; }
    fs[v] = f; mos[v] = mo; mxs[v] = mx; best[v] = 1e9;
  }
  xp = aligned_alloc(64, (size_t)C * H * W * L * 4);
  w = aligned_alloc(64, ((size_t)O * C * K * K * 4 + 63) / 64 * 64);
  out = aligned_alloc(64, (size_t)O * OH * OW * L * 4);
  for (int i = 0; i < C * H * W * L; i++) xp[i] = (i % 7) * 0.1f;
  for (int i = 0; i < O * C * K * K; i++) w[i] = (i % 5) * 0.01f;
  for (int round = 0; round < 40; round++)
    for (int v = 0; v < nv; v++) {
      double t0 = now();
      for (int r = 0; r < reps; r++)
        for (int o0 = 0; o0 < O; o0 += mos[v])
          for (int y = 0; y < OH; y++)
            for (int x0 = 0; x0 < OW; x0 += mxs[v]) fs[v](o0, y, x0);
      double d = now() - t0;
      if (d < best[v]) best[v] = d;
    }
  double flops = 2.0 * O * OH * OW * C * K * K * L * reps;
  for (int v = 0; v < nv; v++) printf("C%d O%d %dx%d: %.1f GFLOP/s\n", C, O, mos[v], mxs[v], flops / best[v] / 1e9);
  return 0;
}
