#include "host/report/profile.h"

#include "host/report/files.h"
#include "host/session/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "host/pack/pack.h"
#include "host/report/svg_chart.h"
#include "host/session/memory_model.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/checked.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/vk_check.h"

namespace snapvk {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// TinyStories-style sentences: small story models predict them, larger models read them as text.
const char* const kSentences[] = {
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside in the park with her dog, Max.",
    "One day, they found a big red ball under a tall tree.",
    "Lily was very happy and shared the ball with her friends.",
    "The sun was warm and the birds sang in the blue sky.",
    "Tom saw a small cat that was sad and alone.",
    "He gave the cat some milk, and the cat purred.",
    "At night, Mom read them a story about a brave knight.",
};

uint64_t lcg(uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return s >> 33;
}

std::string str(double v, int prec) {
  if (!std::isfinite(v)) return "n/a";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

void fill_shape(ProfileReport& r, const ModelConfig& c) {
  r.model_name = c.name;
  r.n_layer = c.n_layer, r.n_head = c.n_head, r.n_head_kv = c.n_head_kv, r.head_dim = c.head_dim;
  r.n_embd = c.n_embd, r.n_vocab = c.n_vocab;
}

void check_options(const ProfileOptions& o) {
  if (o.contexts.empty()) throw Error(ErrorKind::InvalidArgument, "no context lengths to profile");
  for (uint32_t L : o.contexts) {
    if (L < 2)
      throw Error(ErrorKind::InvalidArgument,
                  "a context length must be at least 2 tokens (got " + std::to_string(L) + ")");
    // Each run holds n_ctx = L + gen positions (a 32-bit sum).
    if (uint64_t(L) + o.gen > kMaxContext)
      throw Error(ErrorKind::InvalidArgument, "context length " + std::to_string(L) + " plus " + std::to_string(o.gen) +
                                                  " generated tokens is more than the " + std::to_string(kMaxContext) +
                                                  " positions a session may hold");
  }
  for (const auto& s : o.specs) {
    if (s.is_reference())
      throw Error(ErrorKind::InvalidArgument, "profile spec '" + s.label + "' is the full f16 cache, which always runs");
    s.kv.validate();
  }
  if (o.n_batch == 0) throw Error(ErrorKind::InvalidArgument, "n_batch must be at least 1", opt::n_batch);
}

std::vector<uint32_t> sorted_contexts(const std::vector<uint32_t>& in) {
  std::vector<uint32_t> v(in);
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// What every report states about the run, measured or estimated.
void describe_run(ProfileReport& r, const ProfileOptions& o) {
  std::vector<std::string> types = {"f16"};  // the reference's, then the specs' in order, once each
  for (const auto& s : o.specs)
    if (std::find(types.begin(), types.end(), kv_types_name(s.types)) == types.end())
      types.push_back(kv_types_name(s.types));
  r.kv_type = types[0];
  for (size_t i = 1; i < types.size(); ++i) r.kv_type += "," + types[i];
  r.gen = o.gen;
  r.n_batch = o.n_batch;
  r.packs = o.packs;
  r.contexts = sorted_contexts(o.contexts);
  r.policies.push_back("full");
  for (const auto& s : o.specs) r.policies.push_back(s.label);
}

MemoryQuery query(uint32_t L, const ProfileOptions& o, const ProfileSpec& spec, uint32_t decode_chunk) {
  MemoryQuery q;
  q.prompt_len = L;
  q.n_ctx = L + o.gen;
  q.n_batch = o.n_batch;
  q.kv_types = spec.types;
  q.kv = spec.kv;
  q.decode_chunk = decode_chunk;
  return q;
}

uint32_t row_budget(const KvPolicyOptions& kv, uint32_t L) { return kv.compresses() ? kv.budget_for(L) : 0; }

// The full run's greedy tokens and next-token logits, which the policy runs are compared with.
struct Reference {
  std::vector<int32_t> tokens;             // [gen + 1]: argmax after the prompt and after each step
  std::vector<std::vector<float>> logits;  // [gen]: after decode step i
};

}  // namespace

bool is_synthetic_model(const Model& m) { return m.config().name.rfind("snapvk synth", 0) == 0; }

std::vector<int32_t> profile_prompt(const Model& m, uint32_t L, std::string* needle) {
  checked_range(L, 0, kMaxContext, "profile prompt length");
  std::vector<int32_t> out;
  out.reserve(L);
  const Tokenizer& tok = m.tokenizer();
  const int32_t n_vocab = int32_t(m.config().n_vocab);
  if (tok.bos() >= 0 && tok.bos() < n_vocab) out.push_back(tok.bos());
  uint64_t seed = 0x5eed5eedull;
  std::vector<std::vector<int32_t>> sentences;
  if (!is_synthetic_model(m)) {
    for (const char* s : kSentences) {
      auto ids = tok.encode(s, false);
      std::erase_if(ids, [&](int32_t t) { return t < 0 || t >= n_vocab; });
      if (!ids.empty()) sentences.push_back(std::move(ids));
    }
  }
  if (sentences.empty()) {
    // Random weights: any token ids do; skip the first few (special tokens in most vocabularies).
    const int32_t lo = std::min<int32_t>(3, n_vocab - 1);
    while (out.size() < L) out.push_back(lo + int32_t(lcg(seed) % uint64_t(n_vocab - lo)));
    return out;
  }
  // The needle and its question, when they fit with room to spare: the rest is story text.
  const std::string value = std::to_string(10000 + (L * 2654435761ull) % 90000);
  auto encode = [&](const std::string& text) {
    auto ids = tok.encode(text, false);
    std::erase_if(ids, [&](int32_t t) { return t < 0 || t >= n_vocab; });
    return ids;
  };
  const auto sentence = encode(" The secret number is " + value + ".");
  const auto question = encode(" What is the secret number? The secret number is");
  const bool with_needle = needle && L >= 4 * (sentence.size() + question.size());
  const size_t end = with_needle ? L - question.size() : L;
  const size_t middle = with_needle ? (L - sentence.size() - question.size()) / 2 : L;
  size_t prev = sentences.size();
  bool placed = false;
  while (out.size() < end) {
    size_t i = lcg(seed) % sentences.size();
    if (i == prev) i = (i + 1) % sentences.size();  // no sentence twice in a row
    prev = i;
    if (with_needle && !placed && out.size() >= middle && out.size() + sentence.size() <= end) {
      out.insert(out.end(), sentence.begin(), sentence.end());  // at the first sentence boundary past the middle
      placed = true;
    }
    for (int32_t t : sentences[i]) {
      if (out.size() == end) break;
      out.push_back(t);
    }
  }
  if (!with_needle) return out;
  out.insert(out.end(), question.begin(), question.end());
  if (placed) *needle = value;
  return out;
}

double kl_divergence(std::span<const float> p, std::span<const float> q) {
  SNAPVK_ASSERT(p.size() == q.size() && !p.empty(), "kl_divergence: logits of different sizes");
  std::vector<double> lp, lq;
  log_softmax(p, lp);
  log_softmax(q, lq);
  double kl = 0;
  for (size_t i = 0; i < lp.size(); ++i) {
    const double pi = std::exp(lp[i]);
    if (pi > 0) kl += pi * (lp[i] - lq[i]);
  }
  return std::max(kl, 0.0);
}

namespace {

// Untimed: the first dispatches of each pipeline pay for driver-side compilation.
void warm_up(const Model& m, const ProfileOptions& o, uint32_t first_context) {
  const uint32_t Lw = std::min<uint32_t>(first_context, 64);
  const std::vector<int32_t> prompt = profile_prompt(m, Lw);
  for (size_t si = 0; si <= std::min<size_t>(o.specs.size(), 1); ++si) {
    SessionOptions so;
    so.n_ctx = Lw + 2;
    so.n_batch = o.n_batch;
    if (si) {
      so.set_kv_types(o.specs[0].types);
      so.kv = o.specs[0].kv;
      so.kv.budget = std::max(so.kv.window + 1, Lw / 2), so.kv.ratio = 0;  // compress the warm-up prompt
      if (so.kv.policy == KvPolicy::StreamingLLM) so.kv.budget = std::max(so.kv.budget, so.kv.sinks + so.kv.window);
      if (so.kv.budget >= Lw) continue;
    }
    try {
      Session s(m, so);
      s.decode(argmax(s.prefill(prompt)));
    } catch (const Error&) {
      // A warm-up that does not fit says nothing: the real rows report it.
    }
  }
}

// The prompt's state as a pack: its size, and the time a new session takes to load it and have
// the logits after one more token (time to first token with a pack; without, it is prefill_ms).
void measure_pack(const Model& m, const SessionOptions& so, const Session& s, const std::vector<int32_t>& prompt,
                  ProfileRow& row) {
  const std::vector<uint8_t> bytes = write_pack(pack_of(s, prompt));
  row.pack_bytes = bytes.size();
  Session fresh(m, so);
  const int32_t question = prompt.back();  // any token: one prefill step after the document
  const auto t0 = Clock::now();
  load_pack(fresh, read_pack(bytes, "profile"), "profile");
  row.pack_load_ms = ms_since(t0);
  fresh.prefill(std::span<const int32_t>(&question, 1));
  row.pack_ttft_ms = ms_since(t0);
}

// One measured run: a session of this KV configuration over the prompt and `gen` decode steps,
// greedy for the full cache (which fills `ref`), teacher-forced on the full run's tokens for the
// others (compared with `ref` when it holds a run). `progress` takes tokens done in this run.
void measure_run(const Model& m, const ProfileOptions& o, const ProfileSpec& spec, const std::vector<int32_t>& prompt,
                 const std::string& needle, Reference& ref, const std::function<void(double)>& progress,
                 ProfileRow& row) {
  const uint32_t L = uint32_t(prompt.size());
  const bool is_full = spec.is_reference(), compare = !is_full && !ref.logits.empty() && o.gen > 0;
  SessionOptions so;
  so.n_ctx = L + o.gen;
  so.n_batch = o.n_batch;
  so.set_kv_types(spec.types);
  so.kv = spec.kv;
  so.on_progress = [&](uint64_t done, uint64_t total) {
    if (total) progress(double(L) * double(done) / double(total));
    return true;
  };
  Context& ctx = m.ctx();
  const uint64_t before = ctx.memory().current();
  ctx.memory().reset_peak();
  Session s(m, so);
  auto t0 = Clock::now();
  std::span<const float> logits = s.prefill(prompt);
  row.prefill_ms = ms_since(t0);
  if (o.packs) {
    SessionOptions fresh = so;
    fresh.on_progress = nullptr;
    measure_pack(m, fresh, s, prompt, row);
    logits = s.logits();
  }
  if (is_full) ref = Reference{};
  double kl_sum = 0, kl_max = 0;
  uint32_t agree = 0, step = 0;
  std::vector<int32_t> own;  // this run's argmax at each step: its greedy answer while it agrees with the full run
  GenerateOptions go;
  go.max_tokens = o.gen + 1;  // the last choice reads the last step's logits and is not decoded
  go.stop_at_eog = false;
  go.decode_last = false;
  go.choose = [&](std::span<const float> lg) {
    const uint32_t i = step++;  // lg follows decode step i - 1 (i = 0: the prompt)
    const int32_t top = argmax(lg);
    own.push_back(top);
    if (i > 0) progress(L + i);
    if (is_full) {
      if (i > 0) ref.logits.emplace_back(lg.begin(), lg.end());
      ref.tokens.push_back(top);
    }
    if (!compare) return top;
    if (i > 0) {
      agree += top == ref.tokens[i];
      const double kl = kl_divergence(ref.logits[i - 1], lg);
      kl_sum += kl;
      kl_max = std::max(kl_max, kl);
    }
    return ref.tokens[i];
  };
  Sampler greedy(SamplerParams{});
  GenerateResult gen;
  generate(s, greedy, logits, go, gen);
  if (gen.stop == StopReason::Cancelled) throw Cancelled();
  if (o.gen > 0) row.decode_tok_s = o.gen / (gen.decode_ms / 1e3);
  if (!needle.empty() && o.gen + 1 >= needle.size() + 2)
    row.needle = m.tokenizer().decode(own).find(needle) != std::string::npos ? 1 : 0;
  if (compare) {
    row.steps = o.gen;
    row.top1 = double(agree) / o.gen;
    row.kl_mean = kl_sum / o.gen;
    row.kl_max = kl_max;
  }
  const KvStats st = s.kv_stats();
  row.full_kv_bytes = KvCache::full_bytes(m.config(), KvTypes{}, s.n_past());  // the full f16 cache
  row.kv_bytes = st.retained_bytes;
  row.score_ms = st.score_ms, row.pool_ms = st.pool_ms, row.select_ms = st.select_ms, row.gather_ms = st.gather_ms;
  row.peak_bytes = ctx.memory().peak() - before;
  row.ran = true;
}

}  // namespace

ProfileReport run_profile(const Model& m, const ProfileOptions& o) {
  check_options(o);
  const auto t_start = Clock::now();
  const ModelConfig& c = m.config();
  Context& ctx = m.ctx();
  ProfileReport r;
  fill_shape(r, c);
  r.model = m.gguf().path();
  r.synthetic = is_synthetic_model(m);
  r.device = ctx.info().name;
  r.weight_bytes = m.weights().bytes;
  r.memory_budget = ctx.memory().budget();
  describe_run(r, o);
  if (r.synthetic)
    r.notes.push_back(
        "synthetic model with random weights: fidelity figures (top-1, KL) are meaningless here; "
        "memory and speed are real");

  // Progress in tokens: every run processes L + gen of them.
  double total_units = 0, done_units = 0;
  for (uint32_t L : r.contexts) total_units += double(L + o.gen) * double(1 + o.specs.size());
  auto report = [&](double units, const std::string& what) {
    if (o.on_progress) o.on_progress(std::min(1.0, units / total_units), what);
  };
  warm_up(m, o, r.contexts.front());

  for (uint32_t L : r.contexts) {
    std::string needle;
    const std::vector<int32_t> prompt = profile_prompt(m, L, r.synthetic ? nullptr : &needle);
    Reference ref;  // the full run's, when it ran
    for (size_t si = 0; si <= o.specs.size(); ++si) {
      const bool is_full = si == 0;
      const ProfileSpec spec = is_full ? ProfileSpec{"full", {}, {}} : o.specs[si - 1];
      const KvPolicyOptions& kv = spec.kv;
      ProfileRow row;
      row.context = L;
      row.policy = spec.label;
      row.budget = row_budget(kv, L);
      row.est_peak_bytes = estimate_memory(c, 0, query(L, o, spec, m.attention().decode_chunk)).peak;
      row.full_kv_bytes = KvCache::full_bytes(c, KvTypes{}, uint64_t(L) + o.gen);  // the full f16 cache
      const std::string what = "L=" + std::to_string(L) + " " + row.policy;
      const double base_units = done_units;
      report(base_units, what);
      try {
        measure_run(
            m, o, spec, prompt, needle, ref, [&](double units) { report(base_units + units, what); }, row);
      } catch (const Cancelled&) {
        throw;
      } catch (const Error& e) {
        row.ran = false;
        row.error = e.what();
        row.fits = e.kind() != ErrorKind::OutOfMemory;
        row.kv_bytes = KvCache::size_after_prompt(c, spec.types, kv, L, L + o.gen, o.n_batch).retained;
        row.decode_tok_s = ProfileRow::kNaN;
        if (is_full) ref = Reference{};
      }
      row.ratio = row.kv_bytes ? double(row.full_kv_bytes) / double(row.kv_bytes) : 1.0;
      done_units = base_units + double(L + o.gen);
      r.rows.push_back(std::move(row));
    }
  }
  // Errors on every row that are not about memory are a problem with the options: say so.
  if (std::all_of(r.rows.begin(), r.rows.end(), [](const ProfileRow& x) { return !x.ran && x.fits; }))
    throw Error(ErrorKind::InvalidArgument, r.rows.front().error);
  report(total_units, "done");
  r.total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  return r;
}

ProfileReport dry_run_profile(const ModelConfig& c, uint64_t weight_bytes, uint64_t memory_budget,
                              const ProfileOptions& o, uint32_t decode_chunk) {
  check_options(o);
  ProfileReport r;
  fill_shape(r, c);
  r.dry_run = true;
  r.device = "none (dry run: the memory model)";
  r.weight_bytes = weight_bytes;
  r.memory_budget = memory_budget;
  describe_run(r, o);
  for (uint32_t L : r.contexts) {
    for (size_t si = 0; si <= o.specs.size(); ++si) {
      const ProfileSpec spec = si == 0 ? ProfileSpec{"full", {}, {}} : o.specs[si - 1];
      const KvPolicyOptions& kv = spec.kv;
      const MemoryEstimate e = estimate_memory(c, 0, query(L, o, spec, decode_chunk));
      ProfileRow row;
      row.context = L;
      row.policy = spec.label;
      row.budget = row_budget(kv, L);
      row.full_kv_bytes = KvCache::full_bytes(c, KvTypes{}, uint64_t(L) + o.gen);  // the full f16 cache
      row.kv_bytes = e.kv_cache;
      row.ratio = e.kv_cache ? double(row.full_kv_bytes) / double(e.kv_cache) : 1.0;
      row.est_peak_bytes = e.peak;
      row.fits = memory_budget == 0 || weight_bytes + e.peak <= memory_budget;
      if (!row.fits) row.error = "does not fit the device memory budget";
      r.rows.push_back(std::move(row));
    }
  }
  r.notes.push_back("dry run: every figure comes from the memory model (host/session/memory_model.h); nothing ran");
  return r;
}

// ---- reports ----

namespace {

std::string pad(const std::string& s, size_t w, bool right) {
  if (s.size() >= w) return s;
  return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
}

std::string table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows,
                  size_t left_cols) {
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i)
      if (i + 1 < r.size() || r.size() == w.size()) w[i] = std::max(w[i], r[i].size());
  std::string o;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i) l += "  ";
      // A short row's last cell (a message) runs on without padding.
      l += (i + 1 == r.size() && r.size() < head.size()) ? r[i] : pad(r[i], w[i], i >= left_cols);
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    o += l + "\n";
  };
  line(head);
  std::vector<std::string> rule;
  for (size_t x : w) rule.push_back(std::string(x, '-'));
  line(rule);
  for (const auto& r : rows) line(r);
  return o;
}

std::string ctx_str(uint32_t L) { return svg::format_tick(L, svg::Units::Tokens); }

std::string fmt_g(double v) {
  if (!std::isfinite(v)) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string header_line(const ProfileReport& r) {
  std::string s = "model: " + r.model;
  if (!r.model_name.empty()) s += " (" + r.model_name + ")";
  s += "; " + std::to_string(r.n_layer) + " layers, " + std::to_string(r.n_head) + " heads, " +
       std::to_string(r.n_head_kv) + " KV heads of " + std::to_string(r.head_dim) + "; weights " +
       format_bytes(r.weight_bytes);
  return s;
}

std::string setup_line(const ProfileReport& r) {
  std::string s = "device: " + r.device + "; KV " + r.kv_type + "; n_ctx = L + " + std::to_string(r.gen) + " generated";
  if (r.memory_budget) s += "; device memory budget " + format_bytes(r.memory_budget);
  return s;
}

}  // namespace

std::string profile_table(const ProfileReport& r) {
  std::string o = header_line(r) + "\n" + setup_line(r) + "\n\n";
  std::vector<std::vector<std::string>> rows;
  if (r.dry_run) {
    for (const auto& x : r.rows)
      rows.push_back({ctx_str(x.context), x.policy, x.budget ? std::to_string(x.budget) : "-",
                      format_bytes(x.full_kv_bytes), format_bytes(x.kv_bytes), str(x.ratio, 2) + "x",
                      format_bytes(x.est_peak_bytes), format_bytes(x.est_peak_bytes + r.weight_bytes),
                      r.memory_budget ? (x.fits ? "yes" : "NO: does not fit") : "-"});
    o += table({"context", "policy", "budget", "KV full", "KV cache", "ratio", "session peak", "with weights", "fits"},
               rows, 2);
  } else {
    for (const auto& x : r.rows) {
      std::vector<std::string> row = {ctx_str(x.context), x.policy, x.budget ? std::to_string(x.budget) : "-",
                                      format_bytes(x.full_kv_bytes)};
      if (!x.ran) {
        row.push_back(x.fits ? "error: " + x.error
                             : "does not fit (KV " + format_bytes(x.kv_bytes) + ", session peak ~" +
                                   format_bytes(x.est_peak_bytes) + " estimated)");
      } else {
        const bool compressed = x.policy != "full";
        row.insert(row.end(), {format_bytes(x.kv_bytes), str(x.ratio, 2) + "x", format_bytes(x.peak_bytes),
                               str(x.prefill_ms, 1), compressed ? str(x.compress_ms(), 2) : "-", str(x.decode_tok_s, 1),
                               x.steps ? str(x.top1 * 100, 1) + "%" : "n/a", x.steps ? str(x.kl_mean, 4) : "n/a",
                               x.needle < 0 ? "-"
                               : x.needle   ? "found"
                                            : "missed"});
        if (r.packs)
          row.insert(row.end(), {format_bytes(x.pack_bytes), str(x.pack_load_ms, 1), str(x.pack_ttft_ms, 1)});
      }
      rows.push_back(std::move(row));
    }
    std::vector<std::string> head = {"context", "policy",   "budget",     "KV full",     "KV kept",
                                     "ratio",   "peak mem", "prefill ms", "compress ms", "decode tok/s",
                                     "top-1",   "KL mean",  "needle"};
    if (r.packs) head.insert(head.end(), {"pack", "pack load ms", "TTFT w/ pack ms"});
    o += table(head, rows, 2);
  }
  if (!r.notes.empty()) o += "\n";
  for (const auto& n : r.notes) o += "note: " + n + "\n";
  return o;
}

std::string profile_csv(const ProfileReport& r) {
  std::string o =
      "context,policy,budget,ran,fits,full_kv_bytes,kv_bytes,ratio,peak_bytes,est_peak_bytes,prefill_ms,score_ms,"
      "pool_ms,select_ms,gather_ms,compress_ms,decode_tok_s,steps,top1,kl_mean,kl_max,needle,error\n";
  for (const auto& x : r.rows) {
    o += std::to_string(x.context) + "," + csv_field(x.policy) + "," + std::to_string(x.budget) + "," +
         (x.ran ? "1" : "0") + "," + (x.fits ? "1" : "0") + "," + std::to_string(x.full_kv_bytes) + "," +
         std::to_string(x.kv_bytes) + "," + fmt_g(x.ratio) + "," + (x.ran ? std::to_string(x.peak_bytes) : "") + "," +
         std::to_string(x.est_peak_bytes) + "," + (x.ran ? fmt_g(x.prefill_ms) : "") + "," +
         (x.ran ? fmt_g(x.score_ms) + "," + fmt_g(x.pool_ms) + "," + fmt_g(x.select_ms) + "," + fmt_g(x.gather_ms) +
                      "," + fmt_g(x.compress_ms())
                : std::string(",,,,")) +
         "," + fmt_g(x.decode_tok_s) + "," + std::to_string(x.steps) + "," + fmt_g(x.top1) + "," + fmt_g(x.kl_mean) +
         "," + fmt_g(x.kl_max) + "," + (x.needle < 0 ? "" : std::to_string(x.needle)) + "," + csv_field(x.error) + "\n";
  }
  return o;
}

std::string profile_json(const ProfileReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model, j["model_name"] = r.model_name;
  j["shape"] = {{"n_layer", r.n_layer},   {"n_head", r.n_head}, {"n_head_kv", r.n_head_kv},
                {"head_dim", r.head_dim}, {"n_embd", r.n_embd}, {"n_vocab", r.n_vocab}};
  j["synthetic"] = r.synthetic, j["dry_run"] = r.dry_run, j["device"] = r.device;
  j["weight_bytes"] = r.weight_bytes, j["memory_budget"] = r.memory_budget, j["kv_type"] = r.kv_type;
  j["gen"] = r.gen, j["n_batch"] = r.n_batch;
  j["policies"] = r.policies;
  j["contexts"] = r.contexts;
  j["rows"] = nlohmann::ordered_json::array();
  for (const auto& x : r.rows) {
    nlohmann::ordered_json row;
    row["context"] = x.context, row["policy"] = x.policy, row["budget"] = x.budget;
    row["ran"] = x.ran, row["fits"] = x.fits;
    row["full_kv_bytes"] = x.full_kv_bytes, row["kv_bytes"] = x.kv_bytes, row["ratio"] = x.ratio;
    if (x.ran)
      row["peak_bytes"] = x.peak_bytes;
    else
      row["peak_bytes"] = nullptr;
    row["est_peak_bytes"] = x.est_peak_bytes;
    if (x.ran) {
      row["prefill_ms"] = x.prefill_ms, row["score_ms"] = x.score_ms, row["pool_ms"] = x.pool_ms;
      row["select_ms"] = x.select_ms, row["gather_ms"] = x.gather_ms, row["compress_ms"] = x.compress_ms();
    }
    row["decode_tok_s"] = x.decode_tok_s, row["steps"] = x.steps;  // NaN (not run, no fidelity) dumps as null
    row["top1"] = x.top1, row["kl_mean"] = x.kl_mean, row["kl_max"] = x.kl_max;
    if (x.needle < 0)
      row["needle"] = nullptr;
    else
      row["needle"] = x.needle == 1;
    if (r.packs)
      row["pack_bytes"] = x.pack_bytes, row["pack_load_ms"] = x.pack_load_ms, row["pack_ttft_ms"] = x.pack_ttft_ms;
    if (!x.error.empty()) row["error"] = x.error;
    j["rows"].push_back(std::move(row));
  }
  j["notes"] = r.notes;
  j["total_s"] = r.total_s;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string profile_svg(const ProfileReport& r) {
  using svg::Panel;
  using svg::Series;
  using svg::Units;
  auto color = [&](size_t pi) { return pi == 0 ? std::string("#333333") : svg::palette(pi - 1); };
  Panel kv{"KV cache for L + " + std::to_string(r.gen) + " tokens", "prompt length L (tokens, log scale)",
           "KV cache bytes (log scale)"};
  kv.y_units = Units::Bytes, kv.log_y = true;
  Panel peak{"Peak device memory of the session", "prompt length L (tokens, log scale)",
             "bytes, weights excluded (log scale)"};
  peak.y_units = Units::Bytes, peak.log_y = true;
  Panel speed{"Decode speed at depth L", "prompt length L (tokens, log scale)", "decode tokens/s"};
  Panel fid{"Fidelity: top-1 agreement with full", "prompt length L (tokens, log scale)",
            "agreement over decode steps"};
  fid.y_units = Units::Percent;
  bool any_est = false;
  for (size_t pi = 0; pi < r.policies.size(); ++pi) {
    Series skv{r.policies[pi], color(pi)}, speak = skv, sspeed = skv, sfid = skv;
    skv.dashed = speak.dashed = pi == 0;
    for (const auto& x : r.rows) {
      if (x.policy != r.policies[pi]) continue;
      const bool est = !x.ran;
      any_est |= est && !r.dry_run;
      skv.x.push_back(x.context), skv.y.push_back(double(x.kv_bytes)), skv.hollow.push_back(est && !r.dry_run);
      speak.x.push_back(x.context), speak.y.push_back(double(x.ran ? x.peak_bytes : x.est_peak_bytes));
      speak.hollow.push_back(est && !r.dry_run);
      sspeed.x.push_back(x.context), sspeed.y.push_back(x.ran ? x.decode_tok_s : ProfileRow::kNaN);
      sfid.x.push_back(x.context), sfid.y.push_back(x.steps ? x.top1 : ProfileRow::kNaN);
    }
    kv.series.push_back(skv);
    peak.series.push_back(speak);
    speed.series.push_back(sspeed);
    if (pi > 0) fid.series.push_back(sfid);
  }
  if (any_est) kv.note = peak.note = "hollow markers: did not fit, estimated by the memory model";
  if (r.dry_run)
    peak.note = "estimated by the memory model (dry run)" +
                std::string(r.memory_budget ? "; above the red line: does not fit" : "");
  if (r.memory_budget) {
    const uint64_t left = r.memory_budget > r.weight_bytes ? r.memory_budget - r.weight_bytes : 0;
    peak.hlines.push_back({double(left), "device memory budget minus weights: " + format_bytes(left)});
  }
  if (r.synthetic) fid.note = "random weights: these figures mean nothing";
  std::vector<Panel> panels = {kv, peak};
  if (!r.dry_run) panels.push_back(speed), panels.push_back(fid);
  std::string sub = std::filesystem::path(r.model).filename().string();
  if (!r.model_name.empty() && r.model_name != sub) sub += " (" + r.model_name + ")";
  if (r.dry_run)
    sub += " · KV " + r.kv_type + " · dry run: the memory model's estimates, nothing ran";
  else
    sub += " · " + r.device + " · KV " + r.kv_type + " · " + std::to_string(r.gen) + " decode steps per run";
  return svg::line_charts("snapvk profile: KV memory, speed and fidelity vs context", panels, 2, sub);
}

std::string profile_html(const ProfileReport& r) {
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>snapvk profile</title>\n"
      "<style>body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}"
      "table{border-collapse:collapse;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid "
      "#ddd;text-align:right}"
      "th{background:#f3f3f3}td.l,th.l{text-align:left}tr.full td{background:#fafafa}.note{color:#a33}"
      ".bad{color:#a33}</style></head><body>\n";
  o += "<h1>snapvk profile</h1>\n<p>" + svg::escape(header_line(r)) + "<br>" + svg::escape(setup_line(r)) + "</p>\n";
  for (const auto& n : r.notes) o += "<p class=\"note\">" + svg::escape(n) + "</p>\n";
  o += profile_svg(r);
  o += "<table>\n<tr><th>context</th><th class=\"l\">policy</th><th>budget</th><th>KV full</th><th>KV kept</th>"
       "<th>ratio</th><th>peak mem</th>";
  if (r.dry_run)
    o += "<th>with weights</th><th>fits</th></tr>\n";
  else
    o += "<th>prefill ms</th><th>compress ms</th><th>decode tok/s</th><th>top-1</th><th>KL "
         "mean</th><th>needle</th></tr>\n";
  for (const auto& x : r.rows) {
    o += std::string("<tr") + (x.policy == "full" ? " class=\"full\"" : "") + "><td>" + std::to_string(x.context) +
         "</td><td class=\"l\">" + svg::escape(x.policy) + "</td><td>" + (x.budget ? std::to_string(x.budget) : "-") +
         "</td><td>" + format_bytes(x.full_kv_bytes) + "</td>";
    if (r.dry_run) {
      o += "<td>" + format_bytes(x.kv_bytes) + "</td><td>" + str(x.ratio, 2) + "x</td><td>" +
           format_bytes(x.est_peak_bytes) + "</td><td>" + format_bytes(x.est_peak_bytes + r.weight_bytes) + "</td><td" +
           (x.fits ? ">yes" : " class=\"bad\">no") + "</td></tr>\n";
    } else if (!x.ran) {
      o += "<td colspan=\"9\" class=\"l bad\">" +
           svg::escape(x.fits ? "error: " + x.error : "does not fit: " + x.error) + "</td></tr>\n";
    } else {
      o += "<td>" + format_bytes(x.kv_bytes) + "</td><td>" + str(x.ratio, 2) + "x</td><td>" +
           format_bytes(x.peak_bytes) + "</td><td>" + str(x.prefill_ms, 1) + "</td><td>" +
           (x.policy == "full" ? "-" : str(x.compress_ms(), 2)) + "</td><td>" + str(x.decode_tok_s, 1) + "</td><td>" +
           (x.steps ? str(x.top1 * 100, 1) + "%" : "n/a") + "</td><td>" + (x.steps ? str(x.kl_mean, 4) : "n/a") +
           "</td><td" +
           (x.needle == 0   ? " class=\"bad\">missed"
            : x.needle == 1 ? ">found"
                            : ">-") +
           "</td></tr>\n";
    }
  }
  o += "</table>\n<p>KV bytes are for the whole context (L prompt tokens + " + std::to_string(r.gen) +
       " generated). Peak memory is what the session allocated at its peak, weights excluded. Fidelity compares each "
       "policy's next-token predictions with the full cache's over " +
       std::to_string(r.gen) +
       " decode steps, teacher-forced on the full run's greedy tokens: top-1 is the share of steps with the same "
       "argmax, "
       "KL is KL(full || policy) in nats, averaged over the steps. The prompt hides a secret number in its middle "
       "and asks for it at its end: needle says whether the greedy answer holds it (the fidelity suite's headline; "
       "see docs/fidelity.md). See docs/profile.md.</p>\n</body></html>\n";
  return o;
}

std::vector<std::string> write_profile_files(const ProfileReport& r, const std::string& dir) {
  return write_files(dir, {{"profile.csv", profile_csv(r)},
                           {"profile.json", profile_json(r) + "\n"},
                           {"profile.svg", profile_svg(r)},
                           {"profile.html", profile_html(r)}});
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    out.push_back(std::move(item));
    start = end + 1;
  }
  return out;
}

std::vector<uint32_t> parse_token_counts(const std::string& list, const std::string& what) {
  std::vector<uint32_t> out;
  for (const std::string& original : split_list(list)) {
    std::string item = original;
    uint64_t mul = 1;
    if (!item.empty() && (item.back() == 'k' || item.back() == 'K')) mul = 1024, item.pop_back();
    size_t used = 0;
    unsigned long long v = 0;
    try {
      if (!item.empty() && item[0] != '-') v = std::stoull(item, &used);  // stoull takes "-1" as 2^64 - 1
    } catch (...) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v == 0 || v > 0xFFFFFFFFull / mul)
      throw Error(ErrorKind::InvalidArgument,
                  what + ": '" + original + "' is not a positive token count (examples: 512, 4k)");
    out.push_back(uint32_t(v * mul));
  }
  return out;
}

}  // namespace snapvk
