/* The multiply-add peak of one core: 16 independent chains of AVX-512 FMAs (two FMA
 * ports with 4-cycle latency need 8). Run one copy per core at once to see whether
 * the cores are at full speed: 2 FMA ports x 16 lanes x 2 FLOPs = 64 FLOPs per
 * cycle, so GFLOP/s / 64 is the clock in GHz. docs/perf.md uses it to tell a slower
 * clock from lenet's own speed.
 *
 *   gcc -O3 -mavx512f -mfma fma_peak.c -o fma_peak && (./fma_peak & ./fma_peak; wait)
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

int main(void) {
  __m512 a[16];
  for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps(1.0f + i * 1e-7f);
  /* acc = acc * m + c converges to c / (1 - m) = 1: no overflow, no denormals. */
  __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  const long rounds = 200000000;
  for (long n = 0; n < rounds; n++)
    for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  float sum = 0, lane[16];
  for (int i = 0; i < 16; i++) { _mm512_storeu_ps(lane, a[i]); sum += lane[0]; }
  double gflops = rounds * 16 * 32.0 / s / 1e9;
  printf("%.1f GFLOP/s, %.2f GHz at 2 FMAs per cycle (checksum %.3f)\n", gflops, gflops / 64, sum);
  return 0;
}
