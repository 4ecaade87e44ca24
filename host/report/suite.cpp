#include "host/report/suite.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "host/report/files.h"
#include "host/report/svg_chart.h"
#include "runtime/error.h"

namespace snapvk {

std::pair<uint32_t, uint32_t> SuiteReport::score(const std::string& policy, uint32_t context) const {
  uint32_t found = 0, ran = 0;
  for (const auto& t : tasks) {
    const auto [f, n] = needle_score(t, policy, context);
    found += f, ran += n;
  }
  return {found, ran};
}

SuiteReport run_suite(const Model& m, const SuiteOptions& o) {
  if (o.tasks.empty() && o.text_tokens.empty()) throw Error(ErrorKind::InvalidArgument, "the suite has no task");
  const auto t0 = std::chrono::steady_clock::now();
  SuiteReport r;
  r.model = m.gguf().path(), r.model_name = m.config().name, r.device = m.ctx().info().name;
  // Progress: each task weighs one, perplexity as much as one task.
  const double parts = double(o.tasks.size() + (o.text_tokens.empty() ? 0 : 1));
  double part = 0;
  auto progress = [&](const std::string& what) {
    return [&, what](double f, const std::string& detail) {
      if (o.on_progress) o.on_progress((part + f) / parts, what + ": " + detail);
    };
  };
  for (EvalTask t : o.tasks) {
    NeedleOptions no;
    no.task = t;
    no.contexts = o.contexts, no.depths = o.depths, no.specs = o.specs;
    no.n_batch = o.n_batch, no.seed = o.seed;
    no.on_progress = progress(eval_task_name(t));
    r.tasks.push_back(run_needle(m, no));
    if (o.on_task) o.on_task(r.tasks.back());
    part += 1;
  }
  if (!o.text_tokens.empty()) {
    PerplexityOptions po;
    po.n_ctx = o.ppl_ctx, po.max_chunks = o.ppl_chunks, po.specs = o.specs;
    po.n_batch = o.n_batch;
    po.on_progress = progress("perplexity");
    r.ppl = run_perplexity(m, o.text_tokens, o.text_name, po);
  }
  r.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

namespace {

std::vector<std::string> policies_of(const SuiteReport& r) {
  if (!r.tasks.empty()) return r.tasks.front().policies;
  std::vector<std::string> p;
  if (r.ppl)
    for (const auto& row : r.ppl->rows) p.push_back(row.policy);
  return p;
}

std::vector<uint32_t> contexts_of(const SuiteReport& r) {
  return r.tasks.empty() ? std::vector<uint32_t>{} : r.tasks.front().contexts;
}

const PerplexityRow* ppl_row(const SuiteReport& r, const std::string& policy) {
  if (!r.ppl) return nullptr;
  for (const auto& row : r.ppl->rows)
    if (row.policy == policy) return &row;
  return nullptr;
}

std::string frac(std::pair<uint32_t, uint32_t> s) { return std::to_string(s.first) + "/" + std::to_string(s.second); }

}  // namespace

std::string suite_table(const SuiteReport& r) {
  std::string o =
      "fidelity suite: " + r.model + (r.model_name.empty() ? "" : " (" + r.model_name + ")") + " on " + r.device + "\n";
  const auto policies = policies_of(r);
  char b[64];
  for (uint32_t L : contexts_of(r)) {
    o += "\ncontext " + std::to_string(L) + " tokens (found / cells)\n";
    std::snprintf(b, sizeof b, "%-20s", "policy");
    o += b;
    for (const auto& t : r.tasks) std::snprintf(b, sizeof b, " %13s", eval_task_name(t.task)), o += b;
    o += "           all\n";
    for (const auto& p : policies) {
      std::snprintf(b, sizeof b, "%-20s", p.c_str());
      o += b;
      for (const auto& t : r.tasks) std::snprintf(b, sizeof b, " %13s", frac(needle_score(t, p, L)).c_str()), o += b;
      std::snprintf(b, sizeof b, " %13s\n", frac(r.score(p, L)).c_str());
      o += b;
    }
  }
  if (r.ppl) {
    o += "\nperplexity of each chunk's second half (" + std::to_string(r.ppl->chunks) + " chunks of " +
         std::to_string(r.ppl->n_ctx) + " tokens of " + r.ppl->text + ")\n";
    std::snprintf(b, sizeof b, "%-20s %10s %9s %10s %8s\n", "policy", "ppl", "vs full", "KL", "top-1");
    o += b;
    const double base = r.ppl->rows.front().ppl;
    for (const auto& row : r.ppl->rows) {
      char line[160];
      std::snprintf(line, sizeof line, "%-20s %10.4f %+8.2f%% %10.6f %7.2f%%\n", row.policy.c_str(), row.ppl,
                    (row.ppl / base - 1) * 100, row.kl, row.top1 * 100);
      o += line;
    }
  }
  return o;
}

std::string suite_csv(const SuiteReport& r) {
  std::string o = "policy,measure,context,value,count\n";
  for (const auto& p : policies_of(r)) {
    for (const auto& t : r.tasks)
      for (uint32_t L : t.contexts) {
        const auto [f, n] = needle_score(t, p, L);
        o += p + "," + eval_task_name(t.task) + "," + std::to_string(L) + "," + std::to_string(f) + "," +
             std::to_string(n) + "\n";
      }
    if (const PerplexityRow* row = ppl_row(r, p)) {
      char b[256];
      std::snprintf(b, sizeof b, "%s,ppl,%u,%.6f,%llu\n%s,kl,%u,%.8f,%llu\n%s,top1,%u,%.6f,%llu\n", p.c_str(),
                    r.ppl->n_ctx, row->ppl, (unsigned long long)row->scored, p.c_str(), r.ppl->n_ctx, row->kl,
                    (unsigned long long)row->scored, p.c_str(), r.ppl->n_ctx, row->top1,
                    (unsigned long long)row->scored);
      o += b;
    }
  }
  return o;
}

std::string suite_json(const SuiteReport& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model, j["model_name"] = r.model_name, j["device"] = r.device;
  j["policies"] = policies_of(r);
  j["contexts"] = contexts_of(r);
  j["scores"] = nlohmann::ordered_json::array();
  for (const auto& p : policies_of(r))
    for (const auto& t : r.tasks)
      for (uint32_t L : t.contexts) {
        const auto [f, n] = needle_score(t, p, L);
        j["scores"].push_back(
            {{"policy", p}, {"task", eval_task_name(t.task)}, {"context", L}, {"found", f}, {"cells", n}});
      }
  if (r.ppl) j["perplexity"] = nlohmann::ordered_json::parse(perplexity_json(*r.ppl));
  j["total_s"] = r.total_s;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string suite_svg(const SuiteReport& r) {
  std::vector<svg::HeatGrid> grids;
  for (uint32_t L : contexts_of(r)) {
    svg::HeatGrid g;
    g.title = svg::format_tick(L, svg::Units::Tokens) + " tokens";
    for (const auto& t : r.tasks) g.col_labels.push_back(eval_task_name(t.task));
    for (const auto& p : policies_of(r)) {
      g.row_labels.push_back(p);
      std::vector<double> vals;
      std::vector<std::string> texts;
      for (const auto& t : r.tasks) {
        const auto [f, n] = needle_score(t, p, L);
        vals.push_back(n ? double(f) / n : std::numeric_limits<double>::quiet_NaN());
        texts.push_back(frac({f, n}));
      }
      g.value.push_back(vals);
      g.text.push_back(texts);
    }
    grids.push_back(std::move(g));
  }
  std::string sub = std::filesystem::path(r.model).filename().string() + " · " + r.device;
  return svg::heat_maps("snapvk fidelity suite: share of cells answered", grids, "task", "KV policy", sub);
}

std::vector<std::string> write_suite_files(const SuiteReport& r, const std::string& dir) {
  std::vector<std::string> paths = write_files(
      dir, {{"suite.csv", suite_csv(r)}, {"suite.json", suite_json(r) + "\n"}, {"suite.svg", suite_svg(r)}});
  for (const auto& t : r.tasks)
    for (auto& p : write_needle_files(t, dir)) paths.push_back(std::move(p));
  if (r.ppl)
    for (auto& p : write_perplexity_files(*r.ppl, dir)) paths.push_back(std::move(p));
  return paths;
}

}  // namespace snapvk
