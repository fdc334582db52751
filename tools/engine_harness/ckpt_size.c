// The bytes of one llama-server context checkpoint, read from the engine itself: a context like the server's,
// one slot (sequence 0) filled with N tokens, then llama_state_seq_get_size_ext(ctx, 0, PARTIAL_ONLY) (what
// tools/server/server-context.cpp create_checkpoint stores, @0c1e57098) and the full state for comparison.
//
// Build against an ALREADY BUILT mainline llama.cpp (builds nothing of the engine):
//   cc -O1 -o ckpt_size ckpt_size.c -I$SRC/include -I$SRC/ggml/include -L$BIN -lllama -lggml -lggml-base
// or ik_llama.cpp (8337e4cd: llama_state_seq_get_size takes the flags, examples/server/server-context.cpp:28):
//   cc -O1 -DIK_LLAMA -o ckpt_size_ik ckpt_size.c -I$IK/include -I$IK/ggml/include -L$IK/build-rpc/src \
//      -L$IK/build-rpc/ggml/src -lllama -lggml
// Usage: LD_LIBRARY_PATH=$BIN ./ckpt_size MODEL N_CTX N_SEQ KV_UNIFIED(0/1) SWA_FULL(0/1) N_TOKENS
// Prints one line: n_ctx n_seq unified swa_full n_tokens partial_bytes full_bytes
#include <stdio.h>
#include <stdlib.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char * text, void * user) {
    (void) level; (void) text; (void) user;
}

int main(int argc, char ** argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODEL N_CTX N_SEQ KV_UNIFIED SWA_FULL N_TOKENS\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) atoi(argv[2]);
    cp.n_seq_max = (uint32_t) atoi(argv[3]);
#ifndef IK_LLAMA
    cp.kv_unified = atoi(argv[4]) != 0;   // ik: one cache shared by all sequences, no --swa-full
    cp.swa_full = atoi(argv[5]) != 0;
#endif
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
#ifdef IK_LLAMA
    cp.flash_attn = true;
#else
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
#endif
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot make a context\n"); return 1; }
    const int n_tokens = atoi(argv[6]);
    llama_token tok[512];
    for (int done = 0; done < n_tokens; ) {
        int n = n_tokens - done < 512 ? n_tokens - done : 512;
        for (int i = 0; i < n; ++i) tok[i] = 1 + (done + i) % 200;
#ifdef IK_LLAMA
        struct llama_batch batch = llama_batch_get_one(tok, n, done, 0);
#else
        struct llama_batch batch = llama_batch_get_one(tok, n);
#endif
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
        done += n;
    }
#ifdef IK_LLAMA
    size_t partial = llama_state_seq_get_size(ctx, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY);
    size_t full = llama_state_seq_get_size(ctx, 0, 0);
#else
    size_t partial = llama_state_seq_get_size_ext(ctx, 0, LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY);
    size_t full = llama_state_seq_get_size_ext(ctx, 0, 0);
#endif
    printf("%s %s %s %s %d %zu %zu\n", argv[2], argv[3], argv[4], argv[5], n_tokens, partial, full);
    llama_free(ctx);
#ifdef IK_LLAMA
    llama_free_model(model);
#else
    llama_model_free(model);
#endif
    return 0;
}
