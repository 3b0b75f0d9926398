// llama-dump: run llama.cpp on a token sequence and write every intermediate tensor it computes,
// so that our engine's intermediates can be compared with llama.cpp's bit for bit.
//
// Usage: llama-dump MODEL.gguf OUTDIR THREADS TOKENS [N_DECODE]
//   TOKENS    comma-separated token ids, evaluated as one batch (logits for the last only, as
//             llama-server does for a prompt)
//   N_DECODE  greedy steps after the prompt, one token each (default 0)
// Writes OUTDIR/step<k>/<seq>_<name>.f32: a header line "name ne0 ne1 ne2 ne3\n" then the tensor
// as little-endian f32 (f16 tensors are widened; other types are skipped). step0 is the prompt.
// Context settings are llama-server's defaults (n_ctx 2048 here, n_ubatch 512, flash attention
// auto, f16 KV cache), with the given thread count.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <sys/stat.h>

struct dump_state {
    std::string dir;
    int seq = 0;
};

static bool on_tensor(struct ggml_tensor * t, bool ask, void * ud) {
    if (ask) {
        return t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16;
    }
    auto * st = (dump_state *) ud;
    const int64_t n = ggml_nelements(t);
    std::vector<uint8_t> raw(ggml_nbytes(t));
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
    std::vector<float> f(n);
    if (!ggml_is_contiguous(t)) {
        return true; // views: the contiguous producer is dumped anyway
    }
    if (t->type == GGML_TYPE_F32) {
        memcpy(f.data(), raw.data(), n * sizeof(float));
    } else {
        ggml_fp16_to_fp32_row((const ggml_fp16_t *) raw.data(), f.data(), n);
    }
    char path[4096];
    std::string name = t->name;
    for (auto & c : name) {
        if (c == '/' || c == ' ' || c == '(' || c == ')') c = '_';
    }
    snprintf(path, sizeof path, "%s/%04d_%s.f32", st->dir.c_str(), st->seq++, name.c_str());
    FILE * fp = fopen(path, "wb");
    if (!fp) { perror(path); return false; }
    fprintf(fp, "%s %lld %lld %lld %lld\n", t->name, (long long) t->ne[0], (long long) t->ne[1],
            (long long) t->ne[2], (long long) t->ne[3]);
    fwrite(f.data(), sizeof(float), n, fp);
    fclose(fp);
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL OUTDIR THREADS TOKENS [N_DECODE]\n", argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    std::string outdir = argv[2];
    int threads = atoi(argv[3]);
    std::vector<llama_token> toks;
    for (char * p = argv[4]; *p;) {
        toks.push_back((llama_token) strtol(p, &p, 10));
        if (*p == ',') p++;
    }
    int n_decode = argc > 5 ? atoi(argv[5]) : 0;

    llama_backend_init();
    auto mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    dump_state st;
    auto cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &st;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot make a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    mkdir(outdir.c_str(), 0755);
    for (int step = 0; step <= n_decode; step++) {
        st.dir = outdir + "/step" + std::to_string(step);
        st.seq = 0;
        mkdir(st.dir.c_str(), 0755);
        if (llama_decode(ctx, llama_batch_get_one(toks.data(), (int32_t) toks.size()))) {
            fprintf(stderr, "decode failed at step %d\n", step);
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int i = 1; i < n_vocab; i++) if (logits[i] > logits[best]) best = i;
        printf("%d\n", best);
        fflush(stdout);
        toks.assign(1, best);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
