#pragma once
// `snapvk perplexity`: llama.cpp's perplexity over a text, and what a KV policy costs on it.
// The text is cut into chunks of n_ctx tokens (the first of each replaced by BOS, as llama.cpp
// does). Each chunk's first half is prefilled as a prompt (and compressed, for a compressing
// policy), then its second half is appended and scored: the negative log-likelihood of each of
// its tokens after the first, n_ctx / 2 - 1 per chunk, exactly the tokens llama.cpp scores.
// With the full cache that is llama.cpp's figure; with a compressing policy it is the long-text
// measure of KV-compression papers: how well the model continues a text whose beginning it
// holds only compressed. Every policy is also compared token by token with the full cache
// (KL divergence, top-1 agreement).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/model/model.h"
#include "host/report/profile.h"

namespace snapvk {

struct PerplexityOptions {
  uint32_t n_ctx = 512;            // chunk length in tokens (even, at least 4)
  uint32_t max_chunks = 0;         // 0: every whole chunk of the text
  std::vector<ProfileSpec> specs;  // the full f16 cache is added first when missing (the reference)
  uint32_t n_batch = kDefaultBatch;
  std::function<void(double fraction, const std::string& what)> on_progress;
};

struct PerplexityRow {
  std::string policy;
  uint64_t scored = 0;            // tokens scored
  double nll = 0;                 // mean negative log-likelihood (nats)
  double ppl = 0;                 // exp(nll)
  double ppl_stderr = 0;          // llama.cpp's estimate: ppl * stderr of the mean nll
  double kl = 0;                  // mean KL(full || this) over the scored tokens (nats)
  double top1 = 1;                // share of scored tokens whose argmax agrees with the full cache
  uint64_t kv_bytes = 0;          // KV bytes the session held after the first half (mean over chunks)
  uint64_t full_bytes = 0;        // what the full cache holds for the same tokens
  std::vector<double> chunk_ppl;  // per chunk
};

struct PerplexityReport {
  std::string model, model_name, device, text;
  uint32_t n_ctx = 0, chunks = 0;
  uint64_t text_tokens = 0;
  std::vector<PerplexityRow> rows;  // the full cache first
  double total_s = 0;
  std::vector<std::string> notes;
};

// Throws snapvk::Error (InvalidArgument) when the text has fewer than n_ctx tokens.
PerplexityReport run_perplexity(const Model& m, const std::vector<int32_t>& text_tokens, const std::string& text_name,
                                const PerplexityOptions& o);
// The tokens of a text as perplexity reads it (with BOS when the model adds one).
std::vector<int32_t> perplexity_tokens(const Model& m, const std::string& text);

std::string perplexity_table(const PerplexityReport& r);
std::string perplexity_csv(const PerplexityReport& r);
std::string perplexity_json(const PerplexityReport& r);
// Writes perplexity.csv and perplexity.json into `dir`; returns their paths.
std::vector<std::string> write_perplexity_files(const PerplexityReport& r, const std::string& dir);

}  // namespace snapvk
