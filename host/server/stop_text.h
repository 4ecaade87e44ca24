#pragma once
// OpenAI's `stop` sequences over streamed text: text is released as soon as it cannot be the
// start of a stop sequence, so a stream never shows part of one, and generation ends at the
// first complete one (which is not part of the answer).
#include <string>
#include <string_view>
#include <vector>

namespace snapvk::server {

class StopText {
 public:
  explicit StopText(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Appends generated text; returns what may be shown now.
  std::string push(std::string_view text);
  // What is still held back, at the end of generation (nothing once a stop matched).
  std::string flush();
  bool matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool matched_ = false;
};

}  // namespace snapvk::server
