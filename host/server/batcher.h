#pragma once
// Batched decode for the server's slots: each slot's generation loop hands its next token to the
// batcher and waits; the batcher's thread runs one forward pass (Session::decode_batch) over the
// tokens of every slot that is generating, as soon as each of them has handed one in. A slot that
// is prefilling is not waited for, so a new prompt never holds up the others' streams.
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "host/session/session.h"

namespace snapvk::server {

class DecodeBatcher {
 public:
  DecodeBatcher(const Model& m, uint32_t max_seqs);
  ~DecodeBatcher();
  DecodeBatcher(const DecodeBatcher&) = delete;
  DecodeBatcher& operator=(const DecodeBatcher&) = delete;

  // A slot starts (join) or ends (leave) generating: while it generates, each step waits for its token.
  void join();
  void leave();
  // Appends `token` to `s` in the next batched step; returns the session's logits after it.
  // Rethrows the step's error.
  std::span<const float> decode(Session& s, int32_t token);
  uint64_t steps() const { return steps_; }     // forward passes run
  uint64_t sequences() const { return seqs_; }  // tokens decoded in them

 private:
  struct Pending {
    Session* session;
    int32_t token;
    bool done = false;
    std::exception_ptr error;
  };
  void loop();

  DecodeBatch batch_;
  std::mutex mu_;
  std::condition_variable cv_;       // to the batcher: a token or a member changed
  std::condition_variable done_cv_;  // to the slots: a step ended
  std::vector<Pending*> pending_;
  uint32_t members_ = 0;
  bool exiting_ = false;
  std::atomic<uint64_t> steps_{0}, seqs_{0};
  std::thread thread_;
};

}  // namespace snapvk::server
