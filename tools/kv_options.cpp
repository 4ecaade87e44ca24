// The session options of every command that builds a session, walked from the option table.
#include <algorithm>
#include <type_traits>

#include "runtime/error.h"
#include "tools/cli.h"

namespace snapvk::cli {

void add_session_options(CLI::App& app, SessionCli& o, std::initializer_list<std::string_view> skip) {
  visit_options(o.so, [&](const OptionInfo& info, auto& field) {
    if (std::find(skip.begin(), skip.end(), std::string_view(info.key)) != skip.end()) return;
    using T = std::remove_reference_t<decltype(field)>;
    if (std::string_view(info.key) == opt::kv_type_k.name) {
      // both caches' type at once; declared before --kv-type-k and --kv-type-v, whose callbacks
      // run after its own (CLI11 runs them in declaration order), so they override it
      app.add_option_function<std::string>(
          "--kv-type",
          [&o](const std::string& t) { o.text["kv_type"] = o.text[opt::kv_type_k.name] = o.text[opt::kv_type_v.name] = t; },
          "K and V cache storage (--kv-type-k and --kv-type-v set one): " + names_of(names(KvType{}), ", "));
    }
    if constexpr (std::is_enum_v<T>) {
      std::string& text = o.text[info.key];
      text = name_in(names(field), field);
      app.add_option(info.flag, text, std::string(info.help) + ": " + names_of(names(field), ", "))
          ->capture_default_str();
    } else {
      auto* opt = app.add_option(info.flag, field, info.help);
      if (field != T{}) opt->capture_default_str();  // a number unset by default shows none
      // a session-wide count with a floor (-b) is checked as it is parsed; the KV options'
      // bounds depend on each other and are validate()'s
      if (info.scope == kSessionWide && info.lo > 0) opt->check(CLI::Range(T(info.lo), T(info.hi)));
    }
  });
}

SessionOptions session_options(const SessionCli& o) {
  SessionOptions so = o.so;
  if (const auto both = o.text.find("kv_type"); both != o.text.end() && !parse_kv_type(both->second))
    throw Error(ErrorKind::InvalidArgument,
                "unknown --kv-type '" + both->second + "' (" + names_of(names(KvType{})) + ")");
  visit_options(so, [&](const OptionInfo& info, auto& field) {
    using T = std::remove_reference_t<decltype(field)>;
    if constexpr (std::is_enum_v<T>) {
      const auto it = o.text.find(info.key);
      if (it == o.text.end()) return;  // not a flag of this command: the default
      const auto v = parse_in(names(field), it->second);
      if (!v)
        throw Error(ErrorKind::InvalidArgument, "unknown " + std::string(info.long_flag()) + " '" + it->second + "' (" +
                                                    names_of(names(field)) + ")");
      field = *v;
    }
  });
  so.kv.validate();  // numbers are checked where they are used: validate(), the session
  return so;
}

nlohmann::ordered_json options_json(const SessionOptions& so) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  visit_options(so, [&](const OptionInfo& info, const auto& field) {
    using T = std::remove_cvref_t<decltype(field)>;
    if constexpr (std::is_enum_v<T>)
      j[info.key] = name_in(names(field), field);
    else
      j[info.key] = field;
  });
  return j;
}

void add_sampler_options(CLI::App& app, SamplerParams& sp, bool& seed_set) {
  app.add_option("--temp", sp.temp, "Temperature (0: greedy)")->capture_default_str()->check(CLI::Range(0.0f, 100.0f));
  app.add_option("--top-k", sp.top_k, "Top-k (<= 0: off)")->capture_default_str();
  app.add_option("--top-p", sp.top_p, "Top-p (1: off)")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--min-p", sp.min_p, "Min-p (0: off)")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--repeat-penalty", sp.repeat_penalty, "Repetition penalty (1: off)")->capture_default_str();
  app.add_option("--repeat-last-n", sp.repeat_last_n, "Tokens the penalty looks back over")->capture_default_str();
  app.add_option_function<uint64_t>(
      "-s,--seed", [&sp, &seed_set](uint64_t s) { sp.seed = s, seed_set = true; }, "Random seed");
}

}  // namespace snapvk::cli
