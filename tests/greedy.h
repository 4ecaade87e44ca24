#pragma once
// The text the generation loop produces greedily for a prompt on a fresh session: what the
// server's answers are compared with (tests/test_serve.cpp, tests/test_scheduler.cpp).
#include <cstdint>
#include <string>
#include <vector>

#include "host/model/model.h"
#include "host/session/generate.h"
#include "host/session/sampler.h"
#include "host/session/session.h"

namespace snapvk::test {

inline std::string direct_greedy(const Model& m, const std::string& text, uint32_t max_tokens,
                                 bool chat_special = false, const SessionOptions& so = {}) {
  Session s(m, so);
  const std::vector<int32_t> tokens = m.tokenizer().encode(text, true, chat_special);
  SamplerParams sp;
  sp.temp = 0;
  Sampler sampler(sp);
  GenerateOptions go;
  go.max_tokens = max_tokens;
  GenerateResult r;
  generate(s, sampler, s.prefill(tokens), go, r);
  return r.text;
}

}  // namespace snapvk::test
