/* Compiled as strict C99 with -Wall -Wextra -pedantic -Werror (see CMakeLists.txt): the
 * public C header must stay plain C. Uses every type so that each is checked, not just parsed. */
#include <snapvk/snapvk.h>

#if SNAPVK_ABI_VERSION < 1
#error "SNAPVK_ABI_VERSION"
#endif

static int on_token(int32_t token, const char* piece, void* user_data) {
  (void)piece;
  (void)user_data;
  return token < 0;
}

static int on_progress(uint64_t done, uint64_t total, void* user_data) {
  (void)user_data;
  return done > total;
}

static void on_log(int32_t level, const char* message, void* user_data) {
  (void)level;
  (void)message;
  (void)user_data;
}

snapvk_status snapvk_c99_header_check(const char* path);
snapvk_status snapvk_c99_header_check(const char* path) {
  snapvk_device_options dopt = {0};
  snapvk_model_options mopt = {0};
  snapvk_session_options sopt = {0};
  snapvk_sampling_params sp = {0};
  snapvk_generate_result result = {0};
  snapvk_kv_stats stats = {0};
  snapvk_device_info dinfo = {0};
  snapvk_device_memory dmem = {0};
  snapvk_model_info minfo = {0};
  snapvk_chat_template_info tinfo = {0};
  snapvk_chat_message msgs[2];
  snapvk_device* device = NULL;
  snapvk_model* model = NULL;
  snapvk_session* session = NULL;
  snapvk_status st;
  int32_t tokens[8];
  size_t n = 0;
  char text[64];
  const float* logits = NULL;
  uint32_t count = 0;

  dopt.struct_size = sizeof dopt;
  mopt.struct_size = sizeof mopt;
  sopt.struct_size = sizeof sopt;
  sp.struct_size = sizeof sp;
  result.struct_size = sizeof result;
  stats.struct_size = sizeof stats;
  dinfo.struct_size = sizeof dinfo;
  dmem.struct_size = sizeof dmem;
  minfo.struct_size = sizeof minfo;
  tinfo.struct_size = sizeof tinfo;
  msgs[0].struct_size = msgs[1].struct_size = sizeof msgs[0];
  msgs[0].reserved = msgs[1].reserved = 0;
  msgs[0].role = "system";
  msgs[0].content = "Be brief.";
  msgs[1].role = "user";
  msgs[1].content = "Hi";
  mopt.chat_template = NULL;
  sopt.kv_policy = SNAPVK_KV_POLICY_SNAPKV;
  sopt.kv_type = SNAPVK_KV_TYPE_F16;
  sopt.kv_pool = SNAPVK_KV_POOL_MAX;
  sopt.kv_gqa = SNAPVK_KV_GQA_MEAN;
  sopt.on_progress = on_progress;
  sp.seed = SNAPVK_SEED_RANDOM;

  (void)snapvk_set_log_level(SNAPVK_LOG_WARN);
  (void)snapvk_set_log_callback(on_log, NULL);
  (void)snapvk_device_count(&count);
  (void)snapvk_device_describe(0, &dinfo);
  st = snapvk_device_create(&dopt, &device);
  if (st != SNAPVK_OK) return st;
  (void)snapvk_device_get_info(device, &dinfo);
  (void)snapvk_device_get_memory(device, &dmem);
  st = snapvk_model_load(device, path, &mopt, &model);
  if (st == SNAPVK_OK) {
    (void)snapvk_model_get_info(model, &minfo);
    (void)snapvk_model_get_chat_template(model, &tinfo);
    (void)snapvk_chat_apply_template(model, msgs, 2, 1, text, sizeof text, &n);
    (void)snapvk_tokenize(model, "x", SNAPVK_TOKENIZE_ADD_SPECIAL | SNAPVK_TOKENIZE_PARSE_SPECIAL, tokens, 8, &n);
    (void)snapvk_detokenize(model, tokens, n, SNAPVK_DETOKENIZE_SPECIAL | SNAPVK_DETOKENIZE_STRIP_SPACE, text,
                            sizeof text, &n);
    st = snapvk_session_create(model, &sopt, &session);
  }
  if (st == SNAPVK_OK) {
    (void)snapvk_session_prefill_text(session, "x");
    (void)snapvk_session_reset(session);
    (void)snapvk_session_prefill_chat(session, msgs, 2, 1);
    (void)snapvk_session_prefill_tokens(session, tokens, 1);
    (void)snapvk_session_generate(session, &sp, 1, on_token, NULL, &result);
    (void)snapvk_session_get_logits(session, &logits, &n);
    (void)snapvk_session_get_kv_stats(session, &stats);
    (void)snapvk_session_cancel(session);
    (void)snapvk_session_reset(session);
  }
  snapvk_session_free(session);
  snapvk_model_free(model);
  snapvk_device_free(device);
  (void)snapvk_last_error();
  (void)snapvk_status_name(st);
  (void)snapvk_version_string();
  return snapvk_abi_version() == SNAPVK_ABI_VERSION && result.stop_reason != SNAPVK_STOP_CANCELLED ? st
                                                                                                   : SNAPVK_INTERNAL;
}
