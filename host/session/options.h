#pragma once
// Every option a user sets on a session, declared once. The CLI (tools/kv_options.cpp), the C
// API (api/snapvk_c.cpp), the server's request JSON (host/server/openai.cpp), packs
// (host/pack/pack.cpp) and the --json reports walk this table instead of naming each option;
// SessionOptions (host/session/session.h) holds the values and their defaults.
#include <cstdint>
#include <string_view>

#include "host/kv/kv_policy.h"

namespace snapvk {

// Prompt tokens per prefill step when nobody says otherwise (SessionOptions::n_batch).
constexpr uint32_t kDefaultBatch = 256;

// X(key, member, flag, scope, lo, hi, help) for each option of SessionOptions; the columns are
// SNAPVK_KV_OPTIONS' (host/kv/kv_policy.h), whose rows follow with their members in `kv`.
#define SNAPVK_SESSION_OPTIONS(X)                                                                        \
  X(n_ctx, n_ctx, "-c,--ctx-size", kSessionWide, 0, kMaxContext,                                         \
    "Positions the session holds, prompt and generated (0: the model's training context, at most 4096)") \
  X(n_batch, n_batch, "-b,--batch-size", kSessionWide, 1, kMaxContext, "Prompt tokens per prefill step") \
  X(kv_type_k, kv_type_k, "--cache-type-k,--kv-type-k", kSessionWide, 0, 0, "K cache storage")          \
  X(kv_type_v, kv_type_v, "--cache-type-v,--kv-type-v", kSessionWide, 0, 0, "V cache storage")          \
  SNAPVK_KV_OPTIONS(X, kv.)

namespace opt {
#define SNAPVK_OPTION_PARAM(key, member, ...) inline constexpr Param key{#key};
SNAPVK_OPTION_PARAM(n_ctx, n_ctx)
SNAPVK_OPTION_PARAM(n_batch, n_batch)
SNAPVK_OPTION_PARAM(kv_type_k, kv_type_k)
SNAPVK_OPTION_PARAM(kv_type_v, kv_type_v)
#undef SNAPVK_OPTION_PARAM
}  // namespace opt

// One row of the table, less its member.
struct OptionInfo {
  const char* key;    // "kv_window"
  const char* flag;   // "--kv-window" ("-c,--ctx-size": CLI11's spelling, short name first)
  OptionScope scope;  // kRequest: a server request may set it
  double lo, hi;      // bounds of a number (unused for enums)
  const char* help;
  Param param() const { return Param{key}; }
  // The long flag alone: "--ctx-size".
  std::string_view long_flag() const {
    const std::string_view f = flag;
    const size_t comma = f.rfind(',');
    return comma == std::string_view::npos ? f : f.substr(comma + 1);
  }
};

// The OptionInfo of a row (for the expansions of the table: here, and the C API's).
#define SNAPVK_OPTION_INFO(key, member, flag, scope, lo, hi, help) \
  OptionInfo { #key, flag, scope, double(lo), double(hi), help }

// Every row, in the table's order.
inline constexpr OptionInfo kOptions[] = {
#define SNAPVK_OPTION_ROW(...) SNAPVK_OPTION_INFO(__VA_ARGS__),
    SNAPVK_SESSION_OPTIONS(SNAPVK_OPTION_ROW)
#undef SNAPVK_OPTION_ROW
};

// The row of `key`, or null.
constexpr const OptionInfo* find_option(std::string_view key) {
  for (const OptionInfo& o : kOptions)
    if (key == o.key) return &o;
  return nullptr;
}

// Calls f(info, field) for every option of `so` (a SessionOptions, const or not), in the
// table's order; field is a reference to the member.
template <class Opts, class F>
void visit_options(Opts& so, F&& f) {
#define SNAPVK_OPTION_VISIT(key, member, ...) f(SNAPVK_OPTION_INFO(key, member, __VA_ARGS__), so.member);
  SNAPVK_SESSION_OPTIONS(SNAPVK_OPTION_VISIT)
#undef SNAPVK_OPTION_VISIT
}

// Calls f(info, field) for the KV policy options of `kv` (a KvPolicyOptions).
template <class Kv, class F>
void visit_kv_options(Kv& kv, F&& f) {
#define SNAPVK_OPTION_VISIT(key, member, ...) f(SNAPVK_OPTION_INFO(key, member, __VA_ARGS__), kv.member);
  SNAPVK_KV_OPTIONS(SNAPVK_OPTION_VISIT, )
#undef SNAPVK_OPTION_VISIT
}

}  // namespace snapvk
