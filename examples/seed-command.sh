# The seed card's launch command (ik_llama.cpp, spring 2025: bare -fa and -fmoe), for `gguf-planner check`:
#   gguf-planner check qwen3-235b-a22b --recipe-file examples/seed-mix-IQ3_K.recipe --base-type IQ3_K \
#       --profile rtx3090ti-9950x-96g --engine ik-2025 -- $(grep -v '^#' examples/seed-command.sh)
./build/bin/llama-server
  --model ubergarm/Qwen3-235B-A22B-GGUF/Qwen3-235B-A22B-mix-IQ3_K-00001-of-00003.gguf
  --alias ubergarm/Qwen3-235B-A22B-mix-IQ3_K
  -fa
  -ctk q8_0 -ctv q8_0
  -c 32768
  -fmoe
  -amb 512
  -rtr
  -ot blk\.1[2-9]\.ffn.*=CPU
  -ot blk\.[2-8][0-9]\.ffn.*=CPU
  -ot blk\.9[0-3]\.ffn.*=CPU
  -ngl 99
  --threads 16
  --host 127.0.0.1
  --port 8080
