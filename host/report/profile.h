#pragma once
// The profile engine behind `snapvk profile`: for each context length L, one deterministic
// prompt of L tokens, run with a full cache and with each chosen KV policy (a Session each,
// n_ctx = L + gen), measuring KV bytes, peak device memory, prefill and compression time,
// decode speed at that depth, and fidelity against the full cache (top-1 agreement and
// KL(full || policy) of the next-token distributions, teacher-forced on the full run's greedy
// tokens). A dry run computes the memory columns from the memory model without a device.
// Reports: an aligned table, CSV, JSON, an SVG chart and a self-contained HTML page.
// See docs/profile.md.
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "host/kernels/attention.h"
#include "host/kv/kv_policy.h"
#include "host/session/options.h"
#include "host/model/model.h"

namespace snapvk {

// One KV configuration to compare with the full f16 cache.
struct ProfileSpec {
  std::string label;  // "snapkv", "snapkv@256" when several budgets are profiled, "snapkv:q4_0" with a KV type
  KvPolicyOptions kv;
  KvTypes types;  // the caches' storage
  // The full f16 cache: what the others are compared with.
  bool is_reference() const { return !kv.compresses() && types == KvTypes{}; }
};

struct ProfileOptions {
  std::vector<uint32_t> contexts;  // prompt lengths L, in tokens
  std::vector<ProfileSpec> specs;  // configurations; the full f16 cache ("full") always runs first
  uint32_t gen = 16;  // decode steps per run (timed and compared); n_ctx = L + gen
  uint32_t n_batch = kDefaultBatch;
  bool packs = false;  // also save each run's state as a pack and time loading it (docs/packs.md)
  // Progress: fraction of the whole profile done (by token-layers) and what runs now.
  std::function<void(double fraction, const std::string& what)> on_progress;
};

struct ProfileRow {
  static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  uint32_t context = 0;  // L: prompt tokens
  std::string policy;    // "full" or the spec's label
  uint32_t budget = 0;   // C for this L (0 for full; == L when the budget covers the prompt)
  bool ran = false;      // false: not run (dry run, or it did not fit: see error)
  bool fits = true;      // false: does not fit the device memory budget
  std::string error;     // why it did not run
  // Bytes for the whole context n_ctx = L + gen, after the run (or estimated): what a full
  // cache holds for those tokens, and what this run's cache holds for them.
  uint64_t full_kv_bytes = 0;
  uint64_t kv_bytes = 0;
  double ratio = 1.0;           // full_kv_bytes / kv_bytes
  uint64_t peak_bytes = 0;      // measured: device bytes the session allocated at its peak (weights excluded)
  uint64_t est_peak_bytes = 0;  // the memory model's peak for the session (weights excluded)
  double prefill_ms = 0;        // wall time of the prompt (compression included)
  double score_ms = 0, pool_ms = 0, select_ms = 0, gather_ms = 0;  // GPU time of the compression passes
  double compress_ms() const { return score_ms + pool_ms + select_ms + gather_ms; }
  double decode_tok_s = kNaN;            // `gen` decode steps after the prompt (NaN: not run)
  uint32_t steps = 0;                    // decode steps compared with the full run (0: no fidelity)
  double top1 = kNaN;                    // share of steps whose argmax equals the full run's (NaN: n/a)
  double kl_mean = kNaN, kl_max = kNaN;  // KL(full || this) in nats per step (NaN: n/a)
  int needle = -1;                       // the suite's headline: 1 the greedy answer holds the number, 0 not, -1 n/a
  // ProfileOptions::packs: the prompt's pack, and a new session's time to its first token with it
  uint64_t pack_bytes = 0;
  double pack_load_ms = kNaN;  // read (checksum, model fingerprint) and load into a new session
  double pack_ttft_ms = kNaN;  // load, then one token (the question) prefilled: logits ready
};

struct ProfileReport {
  std::string model;       // path, or "synthetic:<preset>"
  std::string model_name;  // general.name
  uint32_t n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_embd = 0, n_vocab = 0;
  bool synthetic = false;  // random weights: fidelity figures mean nothing
  bool dry_run = false;
  std::string device;
  uint64_t weight_bytes = 0;
  uint64_t memory_budget = 0;  // --max-device-memory (0: none)
  std::string kv_type;  // the KV types of the specs, comma-separated
  uint32_t gen = 0, n_batch = 0;
  bool packs = false;
  std::vector<std::string> policies;  // "full", then the spec labels, in order
  std::vector<uint32_t> contexts;
  std::vector<ProfileRow> rows;  // per context: full, then each spec
  double total_s = 0;
  std::vector<std::string> notes;  // lines printed with the table (e.g. the random-weights warning)
};

// A deterministic prompt of exactly L tokens: BOS, then story sentences in a fixed
// pseudo-random order (synthetic models: pseudo-random token ids). With `needle` (real models,
// L long enough), a secret number is hidden in the middle of the text and asked for at its end:
// *needle gets the number (left as it was when there is none).
std::vector<int32_t> profile_prompt(const Model& m, uint32_t L, std::string* needle = nullptr);
// True for models written by write_synth_gguf (random weights).
bool is_synthetic_model(const Model& m);

// KL(p || q) in nats between softmax(p_logits) and softmax(q_logits), computed in double.
double kl_divergence(std::span<const float> p_logits, std::span<const float> q_logits);

// Runs the profile on `m` (the context's memory budget, if any, applies: rows that do not fit
// say so). Throws snapvk::Error for bad options (no contexts, a context of 0 tokens).
ProfileReport run_profile(const Model& m, const ProfileOptions& o);

// The memory columns for a shape without running anything: estimate_memory per row, with
// n_ctx = L + gen. weight_bytes counts against `memory_budget` (0: no budget) for `fits`.
ProfileReport dry_run_profile(const ModelConfig& c, uint64_t weight_bytes, uint64_t memory_budget,
                              const ProfileOptions& o, uint32_t decode_chunk = 256);

// Reports.
std::string profile_table(const ProfileReport& r);  // aligned, for a terminal
std::string profile_csv(const ProfileReport& r);
std::string profile_json(const ProfileReport& r);  // one object
std::string profile_svg(const ProfileReport& r);
std::string profile_html(const ProfileReport& r);  // table + the SVG, self-contained
// Writes profile.csv, profile.json, profile.svg and profile.html into `dir` (created if needed);
// returns their paths.
std::vector<std::string> write_profile_files(const ProfileReport& r, const std::string& dir);

// Parses "512,1k,2K,4096" (k/K = 1024). Throws snapvk::Error naming the bad item.
std::vector<uint32_t> parse_token_counts(const std::string& list, const std::string& what);
// The items of a comma-separated option value, spaces around each trimmed; empty items kept.
std::vector<std::string> split_list(const std::string& list);

}  // namespace snapvk
