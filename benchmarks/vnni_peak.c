/* Clock and dot-product throughput microbenchmark (driven by benchmarks/vnni_peak.py).

   ./vnni_peak MODE ITERATIONS  ->  prints "MODE CPU_SECONDS WALL_SECONDS COUNT"

   add   100 dependent register adds per iteration (1 cycle each): COUNT = cycles
   imul  100 dependent imuls (3 cycles each): COUNT = imuls (cycles / 3), a cross-check of add
   zmm   96 vpdpbusd zmm per iteration into 12 independent accumulators (throughput-bound)
   ymm   the same with ymm registers
   avx2  64 AVX2 u8*s8 dot steps (vpmaddubsw + vpmaddwd + vpaddd) over 8 chains, 4 accumulators

   Times are this thread's CPU time (descheduled time excluded) and wall time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define R12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define STR(x) #x
#define ZDP(i) "vpdpbusd %%zmm12, %%zmm13, %%zmm" STR(i) "\n\t"
#define YDP(i) "vpdpbusd %%ymm12, %%ymm13, %%ymm" STR(i) "\n\t"
/* one AVX2 u8*s8 dot step: pmaddubsw -> pmaddwd (by ones) -> paddd; 8 steps per group */
#define A2(i, acc) "vpmaddubsw %%ymm12, %%ymm13, %%ymm" STR(i) "\n\t" \
              "vpmaddwd %%ymm14, %%ymm" STR(i) ", %%ymm" STR(i) "\n\t" \
              "vpaddd %%ymm" STR(i) ", %%ymm" STR(acc) ", %%ymm" STR(acc) "\n\t"

static double clock_s(clockid_t id) {
  struct timespec t; clock_gettime(id, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  const char *mode = argv[1];
  long n = atol(argv[2]);
  if (argc < 3) return 1;
  double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), w0 = clock_s(CLOCK_MONOTONIC);
  long per = 0;
  if (!strcmp(mode, "add")) {  /* 100 dependent 1-cycle adds per iteration: cycles = adds */
    long x = 0, one = argc > 3 ? atol(argv[3]) : 1;  /* a register operand: no rename-time folding */
    for (long i = 0; i < n; i++)
      __asm__ volatile(".rept 100\n\tadd %1, %0\n\t.endr" : "+r"(x) : "r"(one));
    per = 100;
    if (x != 100 * n * one) return 2;
  } else if (!strcmp(mode, "imul")) {  /* 3-cycle dependent multiplies */
    long x = 1, f = argc > 3 ? atol(argv[3]) : 3;
    for (long i = 0; i < n; i++)
      __asm__ volatile(".rept 100\n\timul %1, %0\n\t.endr" : "+r"(x) : "r"(f));
    per = 100;
    if (x == 0 && f != 0) return 2;
#ifdef HAVE_AVX512VNNI
  } else if (!strcmp(mode, "zmm")) {
    for (long i = 0; i < n; i++)
      __asm__ volatile(".rept 8\n\t" R12(ZDP) ".endr" ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5",
                       "xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    per = 96;
  } else if (!strcmp(mode, "ymm")) {
    for (long i = 0; i < n; i++)
      __asm__ volatile(".rept 8\n\t" R12(YDP) ".endr" ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5",
                       "xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    per = 96;
#endif
  } else if (!strcmp(mode, "avx2")) {  /* counts u8*s8 dot "steps" (one 3-instruction chain each) */
    for (long i = 0; i < n; i++)
      __asm__ volatile(".rept 8\n\t" A2(0, 8) A2(1, 9) A2(2, 10) A2(3, 11) A2(4, 8) A2(5, 9) A2(6, 10) A2(7, 11) ".endr"
                       ::: "xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11");
    per = 64;
  } else {
    return 3;
  }
  double c1 = clock_s(CLOCK_THREAD_CPUTIME_ID), w1 = clock_s(CLOCK_MONOTONIC);
  printf("%s %.9f %.9f %ld\n", mode, c1 - c0, w1 - w0, n * per);
  return 0;
}
