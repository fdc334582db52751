/* LD_PRELOAD shim: log every ggml_backend_buft_alloc_buffer(buft, size) call of an engine process, in bytes.
 *
 * Why: mainline's ggml-rpc-server logs each buffer it allocates with GGML_RPC_DEBUG=1 (the per-device bytes the
 * KV harness compares to the byte), but ik_llama.cpp's rpc-server has no such switch (ggml/src/ggml-rpc.cpp:38-43
 * @8337e4cd3: LOG_DBG compiled out), and its load log prints MiB to two decimals. Every buffer either engine
 * allocates for weights, KV cache and compute goes through ggml_backend_buft_alloc_buffer (ggml-backend.cpp:34;
 * ggml-alloc.c:772/943, rpc_server::alloc_buffer, llama.cpp's per-tensor buffers). libggml.so exports it with
 * default visibility and its callers in other translation units reach it through the PLT, so a preloaded
 * definition sees every call; it forwards to the real one unchanged and only writes one line per call:
 *
 *     [buft_alloc] buft: <ggml_backend_buft_name>, size: <bytes requested>
 *
 * (calls with size 0 are not logged) to stderr (the size the engine asked for; ik's CPU backend then mallocs 32 bytes more, ggml-backend.cpp:706).
 * Build: cc -O2 -shared -fPIC -o buft_alloc_log.so buft_alloc_log.c -ldl
 * Use:   LD_PRELOAD=/path/buft_alloc_log.so rpc-server ...   (tools/engine_harness/run_kv_kinds_ik.sh does this)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef void * (*alloc_fn)(void *, size_t);
typedef const char * (*name_fn)(void *);

void * ggml_backend_buft_alloc_buffer(void * buft, size_t size) {
    static alloc_fn real;
    static name_fn name;
    if (!real) {
        real = (alloc_fn) dlsym(RTLD_NEXT, "ggml_backend_buft_alloc_buffer");
        name = (name_fn) dlsym(RTLD_DEFAULT, "ggml_backend_buft_name");
    }
    if (size == 0) {            /* mainline asks every buffer type for an empty buffer while probing: noise */
        return real(buft, size);
    }
    char line[256];
    int n = snprintf(line, sizeof line, "[buft_alloc] buft: %s, size: %zu\n", name ? name(buft) : "?", size);
    if (n > 0) {
        ssize_t w = write(2, line, (size_t) n < sizeof line ? (size_t) n : sizeof line - 1);
        (void) w;
    }
    return real(buft, size);
}
