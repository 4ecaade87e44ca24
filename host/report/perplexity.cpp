#include "host/report/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "host/report/files.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/checked.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

size_t argmax_of(const std::vector<double>& v) { return size_t(std::max_element(v.begin(), v.end()) - v.begin()); }

struct Accum {
  double nll = 0, nll2 = 0, kl = 0;
  uint64_t n = 0, agree = 0, kv_bytes = 0, full_bytes = 0;
};

// One chunk under one KV configuration: prefill the first half, score the second. `ref` holds
// the full cache's log-probabilities of the scored rows (filled when `fill_ref`).
double run_chunk(const Model& m, const PerplexityOptions& o, const ProfileSpec& spec, std::span<const int32_t> chunk,
                 std::vector<std::vector<double>>& ref, bool fill_ref, Accum& acc) {
  const uint32_t half = uint32_t(chunk.size() / 2), scored = uint32_t(chunk.size()) - half - 1;
  SessionOptions so;
  so.n_ctx = uint32_t(chunk.size());
  so.n_batch = o.n_batch;
  so.set_kv_types(spec.types);
  so.kv = spec.kv;
  so.row_logits = true;
  Session s(m, so);
  s.prefill(chunk.first(half));
  const KvStats st = s.kv_stats();
  acc.kv_bytes += st.retained_bytes, acc.full_bytes += st.full_bytes;
  if (fill_ref) ref.assign(scored, {});
  double chunk_nll = 0;
  std::vector<double> lp;
  s.prefill_rows(chunk.subspan(half), [&](uint32_t i, std::span<const float> logits) {
    if (i >= scored) return;  // the last row predicts past the chunk
    log_softmax(logits, lp);
    const double nll = -lp[size_t(chunk[half + i + 1])];
    chunk_nll += nll;
    acc.nll += nll, acc.nll2 += nll * nll, acc.n += 1;
    if (fill_ref) {
      ref[i] = lp;
      acc.agree += 1;
      return;
    }
    double kl = 0;  // KL(full || this)
    for (size_t t = 0; t < lp.size(); ++t) kl += std::exp(ref[i][t]) * (ref[i][t] - lp[t]);
    acc.kl += std::max(kl, 0.0);
    acc.agree += argmax_of(ref[i]) == argmax_of(lp);
  });
  return std::exp(chunk_nll / scored);
}

}  // namespace

std::vector<int32_t> perplexity_tokens(const Model& m, const std::string& text) {
  const Tokenizer& tok = m.tokenizer();
  std::vector<int32_t> ids = tok.encode(text, tok.add_bos());
  const auto n_vocab = int32_t(m.config().n_vocab);
  std::erase_if(ids, [&](int32_t t) { return t < 0 || t >= n_vocab; });
  return ids;
}

PerplexityReport run_perplexity(const Model& m, const std::vector<int32_t>& tokens, const std::string& text_name,
                                const PerplexityOptions& o) {
  if (o.n_ctx < 4 || o.n_ctx % 2)
    throw Error(ErrorKind::InvalidArgument,
                "perplexity: the chunk length must be even and at least 4 (got " + std::to_string(o.n_ctx) + ")",
                opt::n_ctx);
  checked_range(o.n_ctx, 4, kMaxContext, "perplexity: chunk length");
  if (tokens.size() < o.n_ctx)
    throw Error(ErrorKind::InvalidArgument, "perplexity: the text has " + std::to_string(tokens.size()) +
                                                " tokens, fewer than one chunk of " + std::to_string(o.n_ctx) +
                                                " (use a longer text or a smaller -c)");
  for (const auto& s : o.specs) s.kv.validate();
  const auto t0 = std::chrono::steady_clock::now();
  PerplexityReport r;
  r.model = m.gguf().path(), r.model_name = m.config().name, r.device = m.ctx().info().name, r.text = text_name;
  r.n_ctx = o.n_ctx;
  r.text_tokens = tokens.size();
  r.chunks = uint32_t(tokens.size() / o.n_ctx);
  if (o.max_chunks) r.chunks = std::min(r.chunks, o.max_chunks);
  std::vector<ProfileSpec> specs = o.specs;
  if (std::none_of(specs.begin(), specs.end(), [](const ProfileSpec& s) { return s.is_reference(); }))
    specs.insert(specs.begin(), ProfileSpec{"full", KvPolicyOptions{}, KvTypes{}});
  std::stable_partition(specs.begin(), specs.end(), [](const ProfileSpec& s) { return s.is_reference(); });
  specs.erase(std::unique(specs.begin(), specs.end(),
                          [](const ProfileSpec& a, const ProfileSpec& b) { return a.is_reference() && b.is_reference(); }),
              specs.end());
  std::vector<Accum> acc(specs.size());
  r.rows.resize(specs.size());
  const int32_t bos = m.tokenizer().bos();
  const bool add_bos = m.tokenizer().add_bos() && bos >= 0 && uint32_t(bos) < m.config().n_vocab;
  std::vector<std::vector<double>> ref;
  for (uint32_t c = 0; c < r.chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + uint64_t(c) * o.n_ctx, tokens.begin() + uint64_t(c + 1) * o.n_ctx);
    if (add_bos) chunk[0] = bos;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (o.on_progress)
        o.on_progress(double(c * specs.size() + i) / double(r.chunks * specs.size()),
                      specs[i].label + " chunk " + std::to_string(c + 1) + "/" + std::to_string(r.chunks));
      r.rows[i].chunk_ppl.push_back(run_chunk(m, o, specs[i], chunk, ref, i == 0, acc[i]));
    }
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    PerplexityRow& row = r.rows[i];
    const Accum& a = acc[i];
    row.policy = specs[i].label;
    row.scored = a.n;
    row.nll = a.nll / double(a.n);
    row.ppl = std::exp(row.nll);
    const double var = std::max(0.0, a.nll2 / double(a.n) - row.nll * row.nll);
    row.ppl_stderr = a.n > 1 ? row.ppl * std::sqrt(var / double(a.n - 1)) : 0;
    row.kl = a.kl / double(a.n);
    row.top1 = double(a.agree) / double(a.n);
    row.kv_bytes = a.kv_bytes / r.chunks, row.full_bytes = a.full_bytes / r.chunks;
  }
  if (o.n_ctx > m.config().n_ctx_train && m.config().n_ctx_train)
    r.notes.push_back("chunks are longer than the model's training context (" + std::to_string(m.config().n_ctx_train) +
                      ")");
  r.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::string perplexity_table(const PerplexityReport& r) {
  std::string o = "perplexity: " + r.model + (r.model_name.empty() ? "" : " (" + r.model_name + ")") + " on " +
                  r.device + "\ntext " + r.text + ": " + std::to_string(r.text_tokens) + " tokens, " +
                  std::to_string(r.chunks) + " chunks of " + std::to_string(r.n_ctx) +
                  "; each chunk's second half scored after its first half was prefilled (and compressed)\n\n";
  char b[256];
  std::snprintf(b, sizeof b, "%-20s %10s %8s %8s %10s %8s %12s\n", "policy", "ppl", "+-", "vs full", "KL", "top-1",
                "KV kept");
  o += b;
  const double base = r.rows.empty() ? 0 : r.rows.front().ppl;
  for (const auto& row : r.rows) {
    const double rel = base > 0 ? (row.ppl / base - 1) * 100 : 0;
    const double kept = row.full_bytes ? 100.0 * double(row.kv_bytes) / double(row.full_bytes) : 100.0;
    std::snprintf(b, sizeof b, "%-20s %10.4f %8.4f %+7.2f%% %10.6f %7.2f%% %11.1f%%\n", row.policy.c_str(), row.ppl,
                  row.ppl_stderr, rel, row.kl, row.top1 * 100, kept);
    o += b;
  }
  for (const auto& n : r.notes) o += "note: " + n + "\n";
  return o;
}

std::string perplexity_csv(const PerplexityReport& r) {
  std::string o = "policy,n_ctx,chunks,scored,ppl,ppl_stderr,nll,kl,top1,kv_bytes,full_bytes\n";
  char b[384];
  for (const auto& row : r.rows) {
    std::snprintf(b, sizeof b, "%s,%u,%u,%llu,%.6f,%.6f,%.6f,%.8f,%.6f,%llu,%llu\n", row.policy.c_str(), r.n_ctx,
                  r.chunks, (unsigned long long)row.scored, row.ppl, row.ppl_stderr, row.nll, row.kl, row.top1,
                  (unsigned long long)row.kv_bytes, (unsigned long long)row.full_bytes);
    o += b;
  }
  return o;
}

std::string perplexity_json(const PerplexityReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model, j["model_name"] = r.model_name, j["device"] = r.device, j["text"] = r.text;
  j["text_tokens"] = r.text_tokens, j["n_ctx"] = r.n_ctx, j["chunks"] = r.chunks;
  j["rows"] = nlohmann::ordered_json::array();
  for (const auto& row : r.rows) {
    nlohmann::ordered_json x;
    x["policy"] = row.policy, x["scored"] = row.scored, x["ppl"] = row.ppl, x["ppl_stderr"] = row.ppl_stderr;
    x["nll"] = row.nll, x["kl"] = row.kl, x["top1"] = row.top1;
    x["kv_bytes"] = row.kv_bytes, x["full_bytes"] = row.full_bytes, x["chunk_ppl"] = row.chunk_ppl;
    j["rows"].push_back(std::move(x));
  }
  j["notes"] = r.notes;
  j["total_s"] = r.total_s;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::vector<std::string> write_perplexity_files(const PerplexityReport& r, const std::string& dir) {
  return write_files(dir, {{"perplexity.csv", perplexity_csv(r)}, {"perplexity.json", perplexity_json(r) + "\n"}});
}

}  // namespace snapvk
