#pragma once
// The retrieval evaluations (`snapvk eval needle`, `eval passkey`, ...; host/report/eval_tasks.h
// builds their prompts): text to each context length, what must be found inserted at each
// depth, a question at the end; greedy generation, scored by whether the generated text holds
// the answer. One grid (depth x context) per KV configuration. Scores mean something only on
// models trained for retrieval; on any other model (stories260K, random weights) the grid runs.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/model/model.h"
#include "host/report/eval_tasks.h"
#include "host/report/profile.h"

namespace snapvk {

struct NeedleOptions {
  EvalTask task = EvalTask::Needle;
  std::vector<uint32_t> contexts;  // prompt lengths, in tokens
  std::vector<uint32_t> depths;    // needle position, percent of the filler (0: start, 100: end)
  std::vector<ProfileSpec> specs;  // KV configurations, the full cache included if wanted
  uint32_t n_batch = kDefaultBatch;
  uint32_t extra_tokens = 4;  // generated beyond the value's own token count
  uint64_t seed = 1;          // picks the value of each cell
  std::function<void(double fraction, const std::string& what)> on_progress;
};

using NeedlePrompt = TaskPrompt;

// The prompt of one `needle` cell. Throws snapvk::Error when the context is too short for the
// needle and the question.
NeedlePrompt needle_prompt(const Tokenizer& tok, uint32_t n_vocab, uint32_t context, uint32_t depth, uint64_t seed);

struct NeedleCell {
  std::string policy;
  uint32_t context = 0, depth = 0;
  uint32_t needle_pos = 0;
  std::string value, generated;
  bool found = false;
  std::string error;  // the cell did not run (e.g. does not fit)
};

struct NeedleReport {
  EvalTask task = EvalTask::Needle;
  std::string model, model_name, device;
  bool synthetic = false;
  std::vector<std::string> policies;
  std::vector<uint32_t> contexts, depths;
  std::vector<NeedleCell> cells;  // policy-major, then context, then depth
  double total_s = 0;
  std::vector<std::string> notes;
  const NeedleCell* cell(const std::string& policy, uint32_t context, uint32_t depth) const;
};

NeedleReport run_needle(const Model& m, const NeedleOptions& o);

std::string needle_grid(const NeedleReport& r);  // text: one grid per policy
std::string needle_csv(const NeedleReport& r);
std::string needle_json(const NeedleReport& r);
std::string needle_svg(const NeedleReport& r);  // one heat map per policy
// Found cells of `policy`, of those that ran, at one context (0: all contexts).
std::pair<uint32_t, uint32_t> needle_score(const NeedleReport& r, const std::string& policy, uint32_t context = 0);
// Writes <task>.csv, <task>.json and <task>.svg into `dir`; returns their paths.
std::vector<std::string> write_needle_files(const NeedleReport& r, const std::string& dir);

}  // namespace snapvk
