#pragma once
// The fidelity suite (`snapvk eval suite`): every retrieval task (host/report/eval_tasks.h) at
// each context length, depth and KV configuration, and perplexity on a shipped text, summed up
// per policy and context: what a KV policy keeps, beside `profile`'s memory and speed.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "host/report/needle.h"
#include "host/report/perplexity.h"

namespace snapvk {

struct SuiteOptions {
  std::vector<EvalTask> tasks;
  std::vector<uint32_t> contexts, depths;
  std::vector<ProfileSpec> specs;  // the full cache included if wanted
  uint32_t n_batch = kDefaultBatch;
  uint64_t seed = 1;
  std::string text_name;  // perplexity text (empty tokens: no perplexity)
  std::vector<int32_t> text_tokens;
  uint32_t ppl_ctx = 1024, ppl_chunks = 4;
  std::function<void(double fraction, const std::string& what)> on_progress;
  // Called with each task's report as soon as it is done: a caller writes it out, so that what
  // ran is kept when a later part fails (a model whose logits do not fit the device, Ctrl-C).
  std::function<void(const NeedleReport&)> on_task;
};

struct SuiteReport {
  std::string model, model_name, device;
  std::vector<NeedleReport> tasks;  // one per task, in SuiteOptions::tasks order
  std::optional<PerplexityReport> ppl;
  double total_s = 0;
  // Found and ran over every task of `policy` at `context` (0: every context).
  std::pair<uint32_t, uint32_t> score(const std::string& policy, uint32_t context = 0) const;
};

SuiteReport run_suite(const Model& m, const SuiteOptions& o);

std::string suite_table(const SuiteReport& r);
std::string suite_csv(const SuiteReport& r);
std::string suite_json(const SuiteReport& r);
std::string suite_svg(const SuiteReport& r);  // one heat map per context: policy x task
// Writes suite.csv/json/svg, each task's own files and perplexity's into `dir`.
std::vector<std::string> write_suite_files(const SuiteReport& r, const std::string& dir);

}  // namespace snapvk
