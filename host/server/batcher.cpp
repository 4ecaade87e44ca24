#include "host/server/batcher.h"

#include <algorithm>

namespace snapvk::server {

DecodeBatcher::DecodeBatcher(const Model& m, uint32_t max_seqs) : batch_(m, max_seqs) {
  thread_ = std::thread([this] { loop(); });
}

DecodeBatcher::~DecodeBatcher() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    exiting_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DecodeBatcher::join() {
  std::lock_guard<std::mutex> lk(mu_);
  ++members_;
}

void DecodeBatcher::leave() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    --members_;
  }
  cv_.notify_all();  // the others may all be waiting for this one
}

std::span<const float> DecodeBatcher::decode(Session& s, int32_t token) {
  Pending p{&s, token};
  std::unique_lock<std::mutex> lk(mu_);
  pending_.push_back(&p);
  cv_.notify_all();
  done_cv_.wait(lk, [&] { return p.done; });
  if (p.error) std::rethrow_exception(p.error);
  return s.logits();
}

void DecodeBatcher::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  std::vector<Pending*> step;
  std::vector<Session*> sessions;
  std::vector<int32_t> tokens;
  for (;;) {
    // A step runs when every generating slot has handed in its token (or a full batch has).
    cv_.wait(lk, [&] {
      return exiting_ || (!pending_.empty() && pending_.size() >= std::min<size_t>(members_, batch_.max_seqs));
    });
    if (exiting_) return;
    const size_t n = std::min<size_t>(pending_.size(), batch_.max_seqs);
    step.assign(pending_.begin(), pending_.begin() + n);
    pending_.erase(pending_.begin(), pending_.begin() + n);
    lk.unlock();
    sessions.clear(), tokens.clear();
    for (Pending* p : step) sessions.push_back(p->session), tokens.push_back(p->token);
    std::exception_ptr error;
    try {
      Session::decode_batch(batch_, sessions, tokens);
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    ++steps_, seqs_ += n;
    for (Pending* p : step) p->done = true, p->error = error;
    done_cv_.notify_all();
  }
}

}  // namespace snapvk::server
