// Read bandwidth of this machine with T threads: each thread streams through its own part of
// one large buffer (AVX2 loads into four accumulators, as a decode kernel reads its weights),
// REPS times; prints the median GB/s over the passes. The denominator of "decode throughput as
// a fraction of the memory-bandwidth limit" (tools/membw.sh builds and runs this).
//
// Usage: membw THREADS [MiB=2048] [REPS=7]
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { const char *p; size_t n; pthread_barrier_t *bar; double sink; } job_t;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *run(void *arg) {
  job_t *j = arg;
  pthread_barrier_wait(j->bar);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 128 <= j->n; i += 128) {
    a0 = _mm256_add_epi8(a0, _mm256_load_si256((const __m256i *)(j->p + i)));
    a1 = _mm256_add_epi8(a1, _mm256_load_si256((const __m256i *)(j->p + i + 32)));
    a2 = _mm256_add_epi8(a2, _mm256_load_si256((const __m256i *)(j->p + i + 64)));
    a3 = _mm256_add_epi8(a3, _mm256_load_si256((const __m256i *)(j->p + i + 96)));
  }
  __m256i s = _mm256_add_epi8(_mm256_add_epi8(a0, a1), _mm256_add_epi8(a2, a3));
  j->sink = (double)_mm256_extract_epi8(s, 0);
  pthread_barrier_wait(j->bar);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s THREADS [MiB] [REPS]\n", argv[0]); return 2; }
  int t = atoi(argv[1]);
  size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 2048;
  int reps = argc > 3 ? atoi(argv[3]) : 7;
  if (t < 1 || t > 256 || mib < 1 || reps < 1 || reps > 100) { fprintf(stderr, "bad arguments\n"); return 2; }
  size_t n = mib << 20;
  char *buf = aligned_alloc(4096, n);
  if (!buf) { fprintf(stderr, "cannot allocate %zu MiB\n", mib); return 1; }
  memset(buf, 1, n);  // fault every page in before timing
  double *gbs = calloc(reps, sizeof *gbs);
  for (int r = 0; r < reps; r++) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, t + 1);
    pthread_t th[256];
    job_t jobs[256];
    size_t part = n / t / 128 * 128;
    for (int i = 0; i < t; i++) {
      jobs[i] = (job_t){buf + i * part, part, &bar, 0};
      pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    pthread_barrier_wait(&bar);
    double t0 = now();
    pthread_barrier_wait(&bar);
    double dt = now() - t0;
    for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    gbs[r] = (double)(part * t) / dt / 1e9;
  }
  qsort(gbs, reps, sizeof *gbs, cmp);
  printf("threads %d  buffer %zu MiB  read GB/s: median %.2f  (min %.2f, max %.2f, %d passes)\n",
         t, mib, gbs[reps / 2], gbs[0], gbs[reps - 1], reps);
  free(gbs);
  free(buf);
  return 0;
}
