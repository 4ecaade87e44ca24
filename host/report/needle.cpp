#include "host/report/needle.h"

#include "host/report/files.h"
#include "host/session/generate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "host/report/svg_chart.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/checked.h"
#include "runtime/error.h"

namespace snapvk {

namespace {

std::string pct(uint32_t d) { return std::to_string(d) + "%"; }

// Generated text may end inside a multi-byte character (byte tokens): keep reports valid UTF-8.
std::string valid_utf8(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok) {
      o.append(s, i, n);
      i += n;
    } else {
      o += '?';
      i += 1;
    }
  }
  return o;
}

}  // namespace

const NeedleCell* NeedleReport::cell(const std::string& policy, uint32_t context, uint32_t depth) const {
  for (const auto& c : cells)
    if (c.policy == policy && c.context == context && c.depth == depth) return &c;
  return nullptr;
}

NeedlePrompt needle_prompt(const Tokenizer& tok, uint32_t n_vocab, uint32_t context, uint32_t depth, uint64_t seed) {
  return task_prompt(EvalTask::Needle, tok, n_vocab, context, depth, seed);
}

std::pair<uint32_t, uint32_t> needle_score(const NeedleReport& r, const std::string& policy, uint32_t context) {
  uint32_t found = 0, ran = 0;
  for (const auto& c : r.cells)
    if (c.policy == policy && c.error.empty() && (context == 0 || c.context == context)) ran += 1, found += c.found;
  return {found, ran};
}

NeedleReport run_needle(const Model& m, const NeedleOptions& o) {
  if (o.contexts.empty()) throw Error(ErrorKind::InvalidArgument, "no context lengths for the needle test");
  if (o.depths.empty()) throw Error(ErrorKind::InvalidArgument, "no depths for the needle test");
  if (o.specs.empty()) throw Error(ErrorKind::InvalidArgument, "no KV policies for the needle test");
  const std::string task = eval_task_name(o.task);
  for (uint32_t d : o.depths)
    if (d > 100)
      throw Error(ErrorKind::InvalidArgument,
                  "a depth is a percentage of the context, 0 to 100 (got " + std::to_string(d) + ")");
  for (const auto& s : o.specs) s.kv.validate();
  checked_range(o.extra_tokens, 0, kMaxContext, task + ": extra tokens");
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& c = m.config();
  const Tokenizer& tok = m.tokenizer();
  NeedleReport r;
  r.task = o.task;
  r.model = m.gguf().path();
  r.model_name = c.name;
  r.device = m.ctx().info().name;
  r.synthetic = is_synthetic_model(m);
  r.contexts = o.contexts;
  std::sort(r.contexts.begin(), r.contexts.end());
  r.contexts.erase(std::unique(r.contexts.begin(), r.contexts.end()), r.contexts.end());
  r.depths = o.depths;
  std::sort(r.depths.begin(), r.depths.end());
  r.depths.erase(std::unique(r.depths.begin(), r.depths.end()), r.depths.end());
  for (const auto& s : o.specs) r.policies.push_back(s.label);
  r.notes.push_back(
      "scores mean something only on models trained for retrieval over long contexts; "
      "small or untrained models miss the needle whatever the KV policy");
  if (r.synthetic) r.notes.push_back("synthetic model with random weights: every score here is meaningless");
  for (uint32_t L : r.contexts)
    if (c.n_ctx_train && L > c.n_ctx_train)
      r.notes.push_back("context " + std::to_string(L) + " is beyond the model's training context (" +
                        std::to_string(c.n_ctx_train) + ")");

  const double total = double(o.specs.size() * r.contexts.size() * r.depths.size());
  double done = 0;
  std::optional<Error> first_error;  // thrown, kind and all, when no cell ran
  for (const auto& spec : o.specs) {
    for (uint32_t L : r.contexts) {
      for (uint32_t d : r.depths) {
        NeedleCell cell;
        cell.policy = spec.label;
        cell.context = L;
        cell.depth = d;
        const std::string what = spec.label + " L=" + std::to_string(L) + " depth " + pct(d);
        if (o.on_progress) o.on_progress(done / total, what);
        try {
          const TaskPrompt p = task_prompt(o.task, tok, c.n_vocab, L, d, o.seed);
          cell.value = p.value;
          cell.needle_pos = p.needle_pos;
          const uint32_t n_gen = p.value_tokens + o.extra_tokens;  // both <= kMaxContext
          SessionOptions so;
          so.n_ctx =
              uint32_t(checked_range(uint64_t(L) + n_gen, 1, kMaxContext, task + ": context plus generated tokens"));
          so.n_batch = o.n_batch;
          so.set_kv_types(spec.types);
          so.kv = spec.kv;
          so.on_progress = [&](uint64_t a, uint64_t b) {
            if (o.on_progress && b) o.on_progress((done + 0.9 * double(a) / double(b)) / total, what);
            return true;
          };
          Session s(m, so);
          std::span<const float> logits = s.prefill(p.tokens);
          // the greedy answer, up to the end of generation
          GenerateOptions go;
          go.max_tokens = n_gen;
          go.decode_last = false;
          go.choose = [](std::span<const float> lg) { return argmax(lg); };
          Sampler greedy(SamplerParams{});
          GenerateResult gen;
          generate(s, greedy, logits, go, gen);
          if (gen.stop == StopReason::Cancelled) throw Cancelled();
          cell.generated = valid_utf8(tok.decode(gen.tokens));
          cell.found = task_answered(p, cell.generated);
        } catch (const Cancelled&) {
          throw;
        } catch (const Error& e) {
          cell.error = e.what();
          if (!first_error) first_error = e;
        }
        done += 1;
        r.cells.push_back(std::move(cell));
      }
    }
  }
  if (o.on_progress) o.on_progress(1.0, "done");
  if (first_error && std::all_of(r.cells.begin(), r.cells.end(), [](const NeedleCell& x) { return !x.error.empty(); }))
    throw *first_error;
  r.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return r;
}

std::string needle_grid(const NeedleReport& r) {
  std::string o = std::string(eval_task_name(r.task)) + ": " + r.model +
                  (r.model_name.empty() ? "" : " (" + r.model_name + ")") + " on " + r.device + "\n";
  for (const auto& p : r.policies) {
    const auto [found, ran] = needle_score(r, p);
    char head[160];
    std::snprintf(head, sizeof head, "\n%s: found %u of %u\n", p.c_str(), found, ran);
    o += head;
    std::string line = "depth \\ context";
    const size_t w0 = line.size();
    for (uint32_t L : r.contexts) {
      char b[32];
      std::snprintf(b, sizeof b, "%8s", svg::format_tick(L, svg::Units::Tokens).c_str());
      line += b;
    }
    o += line + "\n";
    for (uint32_t d : r.depths) {
      std::string row = pct(d);
      row += std::string(w0 - row.size(), ' ');
      for (uint32_t L : r.contexts) {
        const NeedleCell* c = r.cell(p, L, d);
        char b[32];
        std::snprintf(b, sizeof b, "%8s", !c ? "" : !c->error.empty() ? "err" : c->found ? "yes" : "no");
        row += b;
      }
      o += row + "\n";
    }
  }
  std::vector<std::string> errors;
  for (const auto& c : r.cells)
    if (!c.error.empty() && std::find(errors.begin(), errors.end(), c.error) == errors.end()) errors.push_back(c.error);
  if (!errors.empty()) o += "\n";
  for (const auto& e : errors) o += "err: " + e + "\n";
  o += "\n";
  for (const auto& n : r.notes) o += "note: " + n + "\n";
  return o;
}

std::string needle_csv(const NeedleReport& r) {
  auto field = [](const std::string& s) {
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  };
  std::string o = "policy,context,depth,needle_pos,value,found,generated,error\n";
  for (const auto& c : r.cells)
    o += field(c.policy) + "," + std::to_string(c.context) + "," + std::to_string(c.depth) + "," +
         std::to_string(c.needle_pos) + "," + c.value + "," + (c.error.empty() ? (c.found ? "1" : "0") : "") + "," +
         field(c.generated) + "," + field(c.error) + "\n";
  return o;
}

std::string needle_json(const NeedleReport& r) {
  nlohmann::ordered_json j;
  j["task"] = eval_task_name(r.task);
  j["model"] = r.model, j["model_name"] = r.model_name, j["device"] = r.device, j["synthetic"] = r.synthetic;
  j["policies"] = r.policies;
  j["contexts"] = r.contexts;
  j["depths"] = r.depths;
  j["cells"] = nlohmann::ordered_json::array();
  for (const auto& c : r.cells) {
    nlohmann::ordered_json cell;
    cell["policy"] = c.policy, cell["context"] = c.context, cell["depth"] = c.depth, cell["needle_pos"] = c.needle_pos;
    cell["value"] = c.value, cell["found"] = c.found, cell["generated"] = c.generated;
    if (!c.error.empty()) cell["error"] = c.error;
    j["cells"].push_back(std::move(cell));
  }
  j["notes"] = r.notes;
  j["total_s"] = r.total_s;
  // Generated text may end inside a UTF-8 character: such bytes become U+FFFD.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string needle_svg(const NeedleReport& r) {
  std::vector<svg::HeatGrid> grids;
  for (const auto& p : r.policies) {
    svg::HeatGrid g;
    uint32_t found = 0, ran = 0;
    for (uint32_t L : r.contexts) g.col_labels.push_back(svg::format_tick(L, svg::Units::Tokens));
    for (uint32_t d : r.depths) {
      g.row_labels.push_back(pct(d));
      std::vector<double> vals;
      std::vector<std::string> texts;
      for (uint32_t L : r.contexts) {
        const NeedleCell* c = r.cell(p, L, d);
        if (!c || !c->error.empty()) {
          vals.push_back(std::numeric_limits<double>::quiet_NaN());
          texts.push_back(c ? "error" : "");
        } else {
          vals.push_back(c->found ? 1.0 : 0.0);
          texts.push_back(c->found ? "found" : "missed");
          ran += 1, found += c->found;
        }
      }
      g.value.push_back(vals);
      g.text.push_back(texts);
    }
    g.title = p + " (" + std::to_string(found) + "/" + std::to_string(ran) + ")";
    grids.push_back(std::move(g));
  }
  std::string sub = std::filesystem::path(r.model).filename().string();
  if (!r.model_name.empty() && r.model_name != sub) sub += " (" + r.model_name + ")";
  sub += " · " + r.device + " · scores mean something only on models trained for retrieval";
  return svg::heat_maps(std::string("snapvk eval ") + eval_task_name(r.task) + ": found (green) or missed (red)", grids,
                        "context (tokens)", "needle depth", sub);
}

std::vector<std::string> write_needle_files(const NeedleReport& r, const std::string& dir) {
  const std::string t = eval_task_name(r.task);
  return write_files(dir,
                     {{t + ".csv", needle_csv(r)}, {t + ".json", needle_json(r) + "\n"}, {t + ".svg", needle_svg(r)}});
}

}  // namespace snapvk
