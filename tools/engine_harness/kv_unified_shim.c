/* LD_PRELOAD shim: run llama-completion with a unified KV cache, as llama-server does without -np.
 *
 * Why: mainline llama-server with no -np runs 4 slots sharing one unified KV cache (common/arg.cpp:1403
 * `n_parallel = -1`, tools/server/server.cpp:156-160 `n_parallel = 4; kv_unified = true` @0c1e57098), but -kvu is
 * registered only for the server, perplexity, batched, bench and parallel tools (common/arg.cpp:1724-1730), not
 * for llama-completion, and the CPU build here has no llama-server.  Both tools hand the flag to the library the
 * same way: common_context_params_to_llama copies params.kv_unified into llama_context_params.kv_unified
 * (common/common.cpp:1661) and calls llama_init_from_model, which libllama.so exports and libllama-common.so
 * reaches through the PLT.  This preloaded definition sets kv_unified from the environment (LLAMA_SHIM_KV_UNIFIED=1
 * or 0) and forwards the call unchanged, so the context is built exactly as llama-server builds it with -kvu; the
 * engine prints "kv_unified = true" in its context log (src/llama-context.cpp:315).
 *
 * Build (against the engine's own header, so the struct layout is the library's):
 *   cc -O2 -shared -fPIC -I$LLAMA/include -I$LLAMA/ggml/include -o kv_unified_shim.so kv_unified_shim.c -ldl
 * Use: LLAMA_SHIM_KV_UNIFIED=1 LD_PRELOAD=/path/kv_unified_shim.so llama-completion ... -np 4
 * (tools/engine_harness/run_kv_unified.sh does this).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

#include "llama.h"

typedef struct llama_context * (*init_fn)(struct llama_model *, struct llama_context_params);

struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params) {
    static init_fn real;
    if (!real) {
        real = (init_fn) dlsym(RTLD_NEXT, "llama_init_from_model");
    }
    const char * v = getenv("LLAMA_SHIM_KV_UNIFIED");
    if (v && *v) {
        params.kv_unified = atoi(v) != 0;
    }
    return real(model, params);
}
