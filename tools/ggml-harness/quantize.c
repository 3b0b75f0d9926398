// ggml quantization harness: quantizes f32 rows with llama.cpp's own ggml_quantize_chunk and
// writes the bytes to stdout. Built by tools/build-ggml-harness.sh against the peer llama.cpp
// (libggml-base.a); used by kernels/tests/quantize_vs_ggml.rs as the independent reference.
//
// Protocol (all little-endian, any number of requests until EOF on stdin):
//   request:  u32 type_id (ggml_type), u32 nrows, u32 n_per_row, u32 has_imatrix (0 or 1),
//             f32 data[nrows * n_per_row], then f32 imatrix[n_per_row] if has_imatrix
//   response: nrows * ggml_row_size(type, n_per_row) bytes, written and flushed per request
// Errors (bad header, short input, unsupported type) go to stderr with exit status 1.
#include "ggml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ELEMENTS (1u << 28)

static int read_exact(void * buf, size_t n) {
    return fread(buf, 1, n, stdin) == n;
}

static uint32_t le32(const unsigned char * p) {
    return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static int die(const char * msg, long a, long b) {
    fprintf(stderr, "ggml-quantize-harness: %s (%ld, %ld)\n", msg, a, b);
    return 1;
}

int main(void) {
    const uint32_t probe = 1;
    if (*(const unsigned char *) &probe != 1) {
        return die("big-endian hosts are not supported", 0, 0);
    }
    for (long req = 0;; ++req) {
        unsigned char hdr[16];
        size_t got = fread(hdr, 1, sizeof hdr, stdin);
        if (got == 0 && feof(stdin)) {
            return 0;
        }
        if (got != sizeof hdr) {
            return die("short request header", req, (long) got);
        }
        const uint32_t type_id = le32(hdr), nrows = le32(hdr + 4), n_per_row = le32(hdr + 8);
        const uint32_t has_imatrix = le32(hdr + 12);
        if (type_id >= GGML_TYPE_COUNT || has_imatrix > 1) {
            return die("bad type id or imatrix flag", (long) type_id, (long) has_imatrix);
        }
        const enum ggml_type type = (enum ggml_type) type_id;
        const int64_t blck = ggml_blck_size(type);
        if (blck <= 0 || !ggml_is_quantized(type) || n_per_row == 0 || n_per_row % blck != 0) {
            return die("type is not a block type, or n_per_row is not a multiple of its block", (long) type_id, (long) n_per_row);
        }
        if ((uint64_t) nrows * n_per_row > MAX_ELEMENTS) {
            return die("request too large", (long) nrows, (long) n_per_row);
        }
        if (ggml_quantize_requires_imatrix(type) && !has_imatrix) {
            return die("type requires an imatrix", (long) type_id, 0);
        }
        const size_t n = (size_t) nrows * n_per_row;
        const size_t row_size = ggml_row_size(type, n_per_row);
        float * src = malloc((n ? n : 1) * sizeof(float));
        float * imatrix = has_imatrix ? malloc((size_t) n_per_row * sizeof(float)) : NULL;
        void * dst = malloc(nrows ? (size_t) nrows * row_size : 1);
        if (!src || !dst || (has_imatrix && !imatrix)) {
            return die("out of memory", (long) nrows, (long) n_per_row);
        }
        if (!read_exact(src, n * sizeof(float)) ||
            (has_imatrix && !read_exact(imatrix, (size_t) n_per_row * sizeof(float)))) {
            return die("short request data", req, (long) n);
        }
        size_t written = 0;
        if (nrows > 0) {
            written = ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix);
        }
        if (written != (size_t) nrows * row_size) {
            return die("ggml_quantize_chunk wrote an unexpected size", (long) written, (long) (nrows * row_size));
        }
        if (fwrite(dst, 1, written, stdout) != written || fflush(stdout) != 0) {
            return die("write to stdout failed", req, (long) written);
        }
        free(src);
        free(imatrix);
        free(dst);
    }
}
