/* minimal.c: load a GGUF model, prefill a prompt with SnapKV compression, stream the generated
 * tokens, print what the KV cache holds. Plain C99 against the installed libsnapvk:
 *
 *   cc -std=c99 minimal.c $(pkg-config --cflags --libs snapvk) -o minimal
 *   ./minimal model.gguf ["prompt"] [tokens]
 */
#include <stdio.h>
#include <stdlib.h>

#include <snapvk/snapvk.h>

static int print_piece(int32_t token, const char* piece, void* user_data) {
  (void)token;
  (void)user_data;
  fputs(piece, stdout);
  fflush(stdout);
  return 0; /* non-zero would stop generation */
}

static int fail(const char* what, snapvk_status st) {
  fprintf(stderr, "minimal: %s failed: %s: %s\n", what, snapvk_status_name(st), snapvk_last_error());
  return 1;
}

int main(int argc, char** argv) {
  const char* prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
      "One day, she saw a big red ball. She wanted to play with it, but it was too high. "
      "Lily asked her mom to help her. Her mom said, \"Let's find a stick.\" They found a long stick "
      "and Lily got the ball. She was very happy.";
  uint32_t n_predict = 64;
  snapvk_device* device = NULL;
  snapvk_model* model = NULL;
  snapvk_session* session = NULL;
  snapvk_session_options so = {0};
  snapvk_sampling_params sp = {0};
  snapvk_generate_result result = {0};
  snapvk_kv_stats kv = {0};
  snapvk_status st;
  size_t n_prompt = 0;
  int rc = 1;

  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.gguf [PROMPT] [N_PREDICT]\n", argv[0]);
    return 2;
  }
  if (argc > 2) prompt = argv[2];
  if (argc > 3) n_predict = (uint32_t)strtoul(argv[3], NULL, 10);
  if (snapvk_abi_version() != SNAPVK_ABI_VERSION) {
    fprintf(stderr, "minimal: built for snapvk ABI %d, running with %u\n", SNAPVK_ABI_VERSION,
            (unsigned)snapvk_abi_version());
    return 1;
  }

  /* The device (NULL options: the best one, or $SNAPVK_DEVICE) and the model. */
  if ((st = snapvk_device_create(NULL, &device)) != SNAPVK_OK) return fail("snapvk_device_create", st);
  if ((st = snapvk_model_load(device, argv[1], NULL, &model)) != SNAPVK_OK) {
    rc = fail("snapvk_model_load", st);
    goto done;
  }

  /* A session whose prompt is compressed by SnapKV to half its length (window of 8 tokens),
   * with room for the prompt and n_predict generated tokens (n_ctx 0: the model's context). */
  if ((st = snapvk_tokenize(model, prompt, SNAPVK_TOKENIZE_ADD_SPECIAL, NULL, 0, &n_prompt)) != SNAPVK_OK) {
    rc = fail("snapvk_tokenize", st);
    goto done;
  }
  so.struct_size = sizeof so;
  so.n_ctx = (uint32_t)n_prompt + n_predict;
  so.kv_policy = SNAPVK_KV_POLICY_SNAPKV;
  so.kv_ratio = 0.5f;
  so.kv_window = 8;
  if ((st = snapvk_session_create(model, &so, &session)) != SNAPVK_OK) {
    rc = fail("snapvk_session_create", st);
    goto done;
  }

  printf("%s", prompt);
  fflush(stdout);
  if ((st = snapvk_session_prefill_text(session, prompt)) != SNAPVK_OK) {
    rc = fail("snapvk_session_prefill_text", st);
    goto done;
  }
  sp.struct_size = sizeof sp; /* zero parameters: greedy */
  result.struct_size = sizeof result;
  if ((st = snapvk_session_generate(session, &sp, n_predict, print_piece, NULL, &result)) != SNAPVK_OK) {
    rc = fail("snapvk_session_generate", st);
    goto done;
  }
  printf("\n");

  kv.struct_size = sizeof kv;
  if ((st = snapvk_session_get_kv_stats(session, &kv)) != SNAPVK_OK) {
    rc = fail("snapvk_session_get_kv_stats", st);
    goto done;
  }
  fprintf(stderr, "\ngenerated %u tokens in %.1f ms\n", (unsigned)result.n_tokens, result.decode_ms);
  fprintf(stderr,
          "kv cache: %u tokens (prompt %u compressed), %llu bytes retained, full-cache equivalent %llu bytes, "
          "ratio %.2fx, %llu bytes allocated\n",
          (unsigned)kv.n_past, (unsigned)kv.prompt_len, (unsigned long long)kv.retained_bytes,
          (unsigned long long)kv.full_bytes, kv.ratio, (unsigned long long)kv.allocated_bytes);
  fprintf(stderr, "compression (GPU): score %.3f ms, pool %.3f ms, select %.3f ms, gather %.3f ms\n", kv.score_ms,
          kv.pool_ms, kv.select_ms, kv.gather_ms);
  fprintf(stderr, "device memory: %llu bytes now, peak %llu bytes\n", (unsigned long long)kv.device_bytes,
          (unsigned long long)kv.peak_device_bytes);
  rc = 0;

done:
  snapvk_session_free(session);
  snapvk_model_free(model);
  snapvk_device_free(device);
  return rc;
}
