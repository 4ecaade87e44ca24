#include "host/session/generate.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace snapvk {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::EndOfGeneration: return "end of generation";
    case StopReason::MaxTokens: return "max tokens";
    case StopReason::ContextFull: return "context full";
    case StopReason::Callback: return "callback";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

void generate(Session& s, Sampler& sampler, std::span<const float> logits, const GenerateOptions& o,
              GenerateResult& r) {
  const Tokenizer& tok = s.model().tokenizer();
  const auto t0 = Clock::now();
  Utf8Stream utf8;
  auto at_max = [&] { return o.max_tokens && r.tokens.size() >= o.max_tokens; };
  try {
    for (;;) {
      if (at_max()) {
        r.stop = StopReason::MaxTokens;
        break;
      }
      if (o.cancel && o.cancel->exchange(false)) {
        r.stop = StopReason::Cancelled;
        break;
      }
      if (o.decode_last && s.free_rows() == 0) {  // no room to feed a new token back
        r.stop = StopReason::ContextFull;
        break;
      }
      const int32_t next = o.choose ? o.choose(logits) : sampler.sample(logits);
      r.last_token = next;
      const bool stop_token = std::find(o.stop_tokens.begin(), o.stop_tokens.end(), next) != o.stop_tokens.end();
      if (o.stop_at_eog && (tok.is_eog(next) || stop_token)) {
        r.stop = StopReason::EndOfGeneration;
        break;
      }
      sampler.accept(next);
      r.tokens.push_back(next);
      const std::string piece = tok.token_to_piece(next);
      r.text += piece;
      if (o.on_text)
        if (const std::string text = utf8.push(piece); !text.empty()) o.on_text(text);
      const bool go_on = !o.on_token || o.on_token(next, piece);
      if (!o.decode_last) {  // stop before a decode whose logits nobody reads
        if (at_max() || s.free_rows() == 0) {  // (an endless chat's positions go past n_ctx)
          r.stop = at_max() ? StopReason::MaxTokens : StopReason::ContextFull;
          break;
        }
        if (!go_on) {
          r.stop = StopReason::Callback;
          break;
        }
      }
      const auto d0 = Clock::now();
      logits = o.decode ? o.decode(next) : s.decode(next);
      r.decode_ms += ms_since(d0);
      ++r.decoded;
      if (o.on_decoded) o.on_decoded(next, logits);
      if (!go_on) {
        r.stop = StopReason::Callback;
        break;
      }
    }
  } catch (const Cancelled&) {
    r.stop = StopReason::Cancelled;
  } catch (...) {
    r.wall_ms = ms_since(t0);
    throw;
  }
  if (o.on_text)
    if (const std::string rest = utf8.flush(); !rest.empty()) o.on_text(rest);
  r.wall_ms = ms_since(t0);
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  const size_t n = pending_.size();
  size_t cut = n;
  // The last character starts at most 4 bytes back: hold it if some of its bytes are missing.
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(pending_[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: its lead is further back
    const size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 1;
    if (need > back) cut = n - back;
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string Utf8Stream::flush() { return std::exchange(pending_, {}); }

}  // namespace snapvk
