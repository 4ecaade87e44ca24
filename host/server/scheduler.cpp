#include "host/server/scheduler.h"

#include <algorithm>
#include <limits>

#include "host/server/stop_text.h"
#include "host/session/generate.h"
#include "host/session/memory_model.h"
#include "runtime/log.h"
#include "runtime/memory.h"

namespace snapvk::server {

// ---- Job ----

JobError::JobError(JobFailure f, const std::string& message) : std::runtime_error(message), failure(f) {}

JobError::JobError(const Error& e)
    : std::runtime_error(e.what()),
      failure(e.kind() == ErrorKind::Cancelled ? JobFailure::Cancelled : JobFailure::Session),
      kind(e.kind()),
      param(e.param()) {}

void Job::start(int slot) {
  std::lock_guard<std::mutex> lk(m_);
  state_ = State::Running;
  outcome_.slot = slot;
  cv_.notify_all();
}

void Job::push_text(const std::string& text) {
  std::lock_guard<std::mutex> lk(m_);
  if (outcome_.ttft_ms == 0)
    outcome_.ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - arrived).count();
  text_ += text;
  cv_.notify_all();
}

void Job::set_outcome(const Outcome& o) {
  std::lock_guard<std::mutex> lk(m_);
  const double ttft = outcome_.ttft_ms;
  outcome_ = o;
  outcome_.ttft_ms = ttft;
}

void Job::set_error(const JobError& e) {
  std::lock_guard<std::mutex> lk(m_);
  error_ = e;
}

void Job::close() {
  std::lock_guard<std::mutex> lk(m_);
  state_ = State::Done;
  cv_.notify_all();
}

void Job::fail(const JobError& e) {
  set_error(e);
  close();
}

bool Job::wait_started(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(m_);
  return cv_.wait_for(lk, timeout, [&] { return state_ != State::Queued; });
}

bool Job::next(std::string& text, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(m_);
  cv_.wait_for(lk, timeout, [&] { return !text_.empty() || state_ == State::Done; });
  text = std::move(text_);
  text_.clear();
  return state_ == State::Done;
}

bool Job::wait_done(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(m_);
  return cv_.wait_for(lk, timeout, [&] { return state_ == State::Done; });
}

Job::State Job::state() {
  std::lock_guard<std::mutex> lk(m_);
  return state_;
}

std::optional<JobError> Job::error() {
  std::lock_guard<std::mutex> lk(m_);
  return error_;
}

Outcome Job::outcome() {
  std::lock_guard<std::mutex> lk(m_);
  Outcome o = outcome_;
  o.text += text_;  // what next() has not taken (a non-streamed request takes nothing)
  return o;
}

// ---- Scheduler ----

struct Scheduler::Slot {
  int id = 0;
  std::unique_ptr<Session> session;  // kept between requests: a conversation continues from it
  KvPolicyOptions kv;                // the session's policy
  KvTypes kv_types;                  // and its cache's storage
  bool rows = false;                 // the session has logits for every prefill row (scores prompts)
  ChatHistory history;               // what the session holds of a chat (inactive: a plain prompt)
  std::shared_ptr<const ServedPack> pack;  // the pack the session holds first (null: none)
  std::vector<int32_t> tokens;       // the tokens the session holds after the pack's
  std::shared_ptr<Job> job;          // running (null: idle)
  std::unique_ptr<Plan> plan;
  uint64_t reserved = 0;            // device bytes the memory model counts for this slot's session
  uint64_t last_used = 0;           // for evicting the least recently used idle session first
  KvStats kv_stats;                 // of the session, as of its last prefill or answer
  std::atomic<bool> cancel{false};  // read by the session's prefill progress callback
  std::condition_variable cv;
  std::thread thread;
};

// How a job runs on its slot.
struct Scheduler::Plan {
  bool fresh = true;            // a new conversation (the session is reset or created)
  std::vector<int32_t> tokens;  // to prefill
  ChatHistory history;          // the slot's chat history once the prompt is in (chat)
  uint32_t cached = 0;          // tokens the slot already held (a pack's positions included)
  uint64_t steady = 0;          // bytes of the session: activations and its cache
  uint64_t transient = 0;       // more bytes while its prompt is compressed (prefill_transient)
};

Scheduler::Scheduler(const Model& model, const ChatTemplate& tmpl, const SchedulerOptions& o)
    : model_(model), tmpl_(tmpl), o_(o) {
  if (o_.parallel == 0) throw Error(ErrorKind::InvalidArgument, "the server needs at least one slot (--parallel)");
  if (o_.session.n_ctx == 0) o_.session.n_ctx = default_n_ctx(model.config());
  // The batch buffers come first: the sessions get what is left of the budget.
  if (std::min(o_.decode_batch, o_.parallel) > 1 && DecodeBatch::fits(model))
    batcher_ = std::make_unique<DecodeBatcher>(model, std::min(o_.decode_batch, o_.parallel));
  const MemoryTracker& mem = model.ctx().memory();
  if (mem.budget()) available_ = mem.budget() > mem.current() ? mem.budget() - mem.current() : 0;
  stop_tokens_ = tmpl.stop_tokens(model.tokenizer());
  for (uint32_t i = 0; i < o_.parallel; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->id = int(i);
  }
  for (auto& s : slots_) s->thread = std::thread([this, p = s.get()] { slot_loop(*p); });
}

Scheduler::~Scheduler() { stop(); }

MemoryEstimate Scheduler::fresh_estimate(const GenerationRequest& r, uint32_t L) const {
  SessionOptions so = o_.session;
  so.kv = r.kv;
  so.set_kv_types(r.kv_types);
  r.kv.check_prompt(L);
  return estimate_memory(model_.config(), 0, memory_query(model_, so, L));
}

uint64_t Scheduler::pack_steady_bytes(const ServedPack& p) const {
  // The pack's cache and the session's activations; nothing transient: what follows the
  // document is appended to the cache, never compressed.
  const MemoryQuery q = memory_query(model_, o_.session, 0);
  return activation_bytes(model_.config(), q.n_batch, q.n_ctx, q.decode_chunk) + p.cache_bytes;
}

uint64_t Scheduler::row_logits_bytes() const {
  return uint64_t(o_.session.n_batch) * model_.config().n_vocab * sizeof(float);
}

SessionOptions Scheduler::session_options(const GenerationRequest& r, bool rows, Slot& s) const {
  SessionOptions so = o_.session;
  so.kv = r.kv;
  so.set_kv_types(r.kv_types);
  so.row_logits = rows;
  so.on_progress = [&s](uint64_t, uint64_t) { return !s.cancel.load(); };
  return so;
}

void Scheduler::submit(const std::shared_ptr<Job>& job) {
  const GenerationRequest& r = job->req;
  uint64_t need = 0;
  try {  // the template, the tokenizer and the memory model refuse by snapvk::Error
    const std::string text = r.chat ? ChatHistory().next(tmpl_, r.messages, true) : r.prompt;  // "" for ids
    // After a pack's document no BOS: the document had it (as `run --pack` and `chat --pack`).
    if (!r.chat && !r.prompt_tokens.empty()) {  // ids given: used as they are
      const int32_t n_vocab = model_.tokenizer().n_vocab();
      for (int32_t t : r.prompt_tokens)
        if (t < 0 || t >= n_vocab)
          throw JobError(JobFailure::BadToken, "prompt: token id " + std::to_string(t) +
                                                   " is outside this model's vocabulary (0.." +
                                                   std::to_string(n_vocab - 1) + ")");
      job->tokens = r.prompt_tokens;
    } else {
      job->tokens = model_.tokenizer().encode(text, !job->pack, r.chat);
    }
    const uint32_t n_ctx = o_.session.n_ctx;
    const uint64_t held = job->pack ? job->pack->pack.state.n_past : 0;
    if (job->tokens.empty()) throw JobError(JobFailure::EmptyPrompt, "the prompt has no tokens");
    if (held + job->tokens.size() >= n_ctx)
      throw JobError(JobFailure::PromptTooLong,
                     "the prompt is " + std::to_string(job->tokens.size()) + " tokens" +
                         (job->pack ? " after the pack's " + std::to_string(held) : std::string()) +
                         "; this server's context holds " + std::to_string(n_ctx) + " (prompt and answer together)");
    need = job->pack ? pack_steady_bytes(*job->pack) : fresh_estimate(r, uint32_t(job->tokens.size())).peak;
    if (r.score_prompt()) need += row_logits_bytes();
  } catch (const Error& e) {
    throw JobError(e);
  }
  const uint32_t L = uint32_t(job->tokens.size());
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) throw JobError(JobFailure::ShuttingDown, "the server is shutting down");
  if (available_ && need > available_)
    throw JobError(JobFailure::OverBudget,
                   "this request alone needs " + format_bytes(need) + " of device memory (KV policy " +
                       kv_policy_name(r.kv.policy) + ", " + std::to_string(L) + "-token prompt); the server has " +
                       format_bytes(available_) + " for sessions");
  if (queue_.size() >= o_.queue_size)
    throw JobError(JobFailure::QueueFull,
                   "the server is busy: " + std::to_string(queue_.size()) + " requests are waiting already");
  queue_.push_back(job);
  try_admit();
}

bool Scheduler::withdraw(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = std::find(queue_.begin(), queue_.end(), job);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  idle_cv_.notify_all();
  try_admit();  // the head may have changed
  return true;
}

void Scheduler::cancel(const std::shared_ptr<Job>& job) {
  if (withdraw(job)) {
    job->fail(JobError(JobFailure::Cancelled, "the client closed the connection"));
    return;
  }
  std::lock_guard<std::mutex> lk(mu_);
  job->gen_cancel.store(true);
  for (auto& s : slots_)
    if (s->job == job) s->cancel.store(true);
  transient_cv_.notify_all();
}

uint64_t Scheduler::reserved_except(const Slot* x) const {
  uint64_t sum = 0;
  for (const auto& s : slots_)
    if (s.get() != x) sum += s->reserved;
  return sum;
}

void Scheduler::evict(Slot& s) {
  s.session.reset();  // idle: no thread uses it (a Vulkan object may be freed from any thread)
  s.rows = false;
  s.pack.reset();
  s.history.clear();
  s.tokens.clear();
  s.reserved = 0;
  s.kv_stats = KvStats{};
}

std::optional<Scheduler::Plan> Scheduler::continuation(const Slot& s, const Job& job) const {
  // A prompt to score needs the logits after each of its tokens: all of it is prefilled.
  if (!s.session || s.kv != job.req.kv || s.kv_types != job.req.kv_types || s.tokens.empty() ||
      job.req.score_prompt())
    return std::nullopt;
  // Only the same pack object: another pack (or the same name read again after the file
  // changed) or none means another document before the conversation.
  if (s.pack != job.pack) return std::nullopt;
  Plan p;
  p.fresh = false;
  p.cached = uint32_t(s.tokens.size()) + (s.pack ? s.pack->pack.state.n_past : 0);
  if (job.req.chat) {
    if (!s.history.active()) return std::nullopt;
    p.history = s.history;
    try {
      p.tokens = model_.tokenizer().encode(p.history.next(tmpl_, job.req.messages, true), false, true);
    } catch (const Error&) {
      return std::nullopt;  // the messages do not continue this conversation
    }
  } else {
    if (s.history.active() || s.tokens.size() >= job.tokens.size() ||
        !std::equal(s.tokens.begin(), s.tokens.end(), job.tokens.begin()))
      return std::nullopt;
    p.tokens.assign(job.tokens.begin() + s.tokens.size(), job.tokens.end());
  }
  if (p.tokens.empty() || s.session->n_past() + p.tokens.size() >= s.session->n_ctx()) return std::nullopt;
  p.steady = s.reserved;  // the cache is allocated already
  return p;
}

// Starts `job` on a slot if one is free and its memory fits (after evicting idle sessions).
bool Scheduler::admit(const std::shared_ptr<Job>& job) {
  Slot* target = nullptr;
  std::optional<Plan> plan;
  for (auto& s : slots_)  // the longest conversation that this request continues
    if (!s->job)
      if (auto p = continuation(*s, *job); p && (!plan || p->cached > plan->cached)) target = s.get(), plan = p;
  if (!plan) {
    // A fresh start: an empty slot, so that the conversations the idle sessions hold can still
    // come back to them; else the least recently used idle session makes way (one with the same
    // policy first: its session is reused as it is).
    auto rank = [&](const Slot& s) {
      return s.session ? (s.kv == job->req.kv && s.kv_types == job->req.kv_types ? 1 : 0) : 2;
    };
    for (auto& s : slots_)
      if (!s->job &&
          (!target || rank(*s) > rank(*target) || (rank(*s) == rank(*target) && s->last_used < target->last_used)))
        target = s.get();
    if (!target) return false;
    plan.emplace();
    plan->tokens = job->tokens;
    if (job->req.chat) plan->history.next(tmpl_, job->req.messages, true);
    if (job->pack) {
      plan->steady = pack_steady_bytes(*job->pack);
      plan->cached = job->pack->pack.state.n_past;  // loaded, not prefilled
    } else {
      const MemoryEstimate e = fresh_estimate(job->req, uint32_t(job->tokens.size()));
      plan->steady = e.activations + e.kv_cache + (job->req.score_prompt() ? row_logits_bytes() : 0);
      plan->transient = e.prefill_transient;
    }
    if (available_) {
      // Evict idle sessions, least recently used first, until the request fits: its session, and
      // its prefill's buffers (other prefills' wait in prefill_memory()).
      while (reserved_except(target) + plan->steady + plan->transient > available_) {
        Slot* lru = nullptr;
        for (auto& s : slots_)
          if (s.get() != target && !s->job && s->session && (!lru || s->last_used < lru->last_used)) lru = s.get();
        if (!lru) return false;  // the running sessions need the rest: wait for one to end
        evict(*lru);
      }
    }
    if (target->session && (target->kv != job->req.kv || target->kv_types != job->req.kv_types ||
                            target->rows != job->req.score_prompt()))
      evict(*target);
  }
  target->job = job;
  target->kv = job->req.kv;
  target->kv_types = job->req.kv_types;
  target->reserved = plan->steady;
  target->plan = std::make_unique<Plan>(std::move(*plan));
  target->cancel.store(false);
  target->cv.notify_one();
  return true;
}

void Scheduler::try_admit() {
  while (!queue_.empty()) {
    try {
      if (!admit(queue_.front())) return;  // first come, first served
    } catch (const Error& e) {
      queue_.front()->fail(JobError(e));
    } catch (const std::exception& e) {
      queue_.front()->fail(JobError(JobFailure::Internal, e.what()));
    }
    queue_.pop_front();
  }
}

void Scheduler::slot_loop(Slot& s) {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    s.cv.wait(lk, [&] { return s.job || exiting_; });
    if (!s.job) return;
    std::shared_ptr<Job> job = s.job;
    const std::unique_ptr<Plan> plan = std::move(s.plan);
    lk.unlock();
    job->start(s.id);
    run_job(s, *job, *plan);
    lk.lock();
    s.job.reset();
    s.last_used = ++tick_;
    job->close();  // now that its slot is idle, so that a next turn sent at once finds it
    try_admit();
    idle_cv_.notify_all();
  }
}

Scheduler::PrefillMemory::PrefillMemory(Scheduler& sch, Slot& s, uint64_t bytes) : sch_(sch), bytes_(bytes) {
  if (!bytes_ || !sch.available_) return;
  std::unique_lock<std::mutex> lk(sch.mu_);
  sch.transient_cv_.wait(
      lk, [&] { return s.cancel.load() || sch.reserved_except(nullptr) + sch.transients_ + bytes_ <= sch.available_; });
  if (s.cancel.load()) throw Cancelled();
  sch.transients_ += bytes_;
}

Scheduler::PrefillMemory::~PrefillMemory() {
  if (!bytes_ || !sch_.available_) return;
  {
    std::lock_guard<std::mutex> lk(sch_.mu_);
    sch_.transients_ -= bytes_;
  }
  sch_.transient_cv_.notify_all();
}

// Runs a job on its slot's thread (no lock held but to publish the slot's accounting).
void Scheduler::run_job(Slot& s, Job& job, const Plan& plan) {
  try {
    if (!s.session) {
      s.rows = job.req.score_prompt();
      s.session = std::make_unique<Session>(model_, session_options(job.req, s.rows, s));
    } else if (plan.fresh) {
      s.session->reset();
    }
    if (plan.fresh) {
      s.history.clear(), s.tokens.clear(), s.pack.reset();
      if (job.pack) {
        // The library checked the pack against this model, KV type and context when it read it
        // (load_pack would hash the model's weights again on every request).
        s.session->restore_state(job.pack->pack.state, job.pack->pack.logits);
        s.pack = job.pack;
      }
    }
    std::span<const float> logits;
    std::vector<TokenLogprob> scored;
    std::vector<float> last;
    if (job.req.score_prompt()) {
      last = prefill_scored(s, job, plan.tokens, scored);
      logits = last;
    } else {
      const PrefillMemory hold(*this, s, plan.transient);  // only while the prompt is compressed
      logits = s.session->prefill(plan.tokens);
    }
    s.tokens.insert(s.tokens.end(), plan.tokens.begin(), plan.tokens.end());
    if (job.req.chat) {
      s.history = plan.history;
    } else {
      s.history.clear();
      s.history.invalidate();  // a plain prompt: no chat continues from it
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      s.kv_stats = s.session->kv_stats();
      saved_tokens_ += plan.cached;
    }
    generate_answer(s, job, plan, logits, std::move(scored));
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Cancelled) {
      log().warn("serve: slot {}: {}", s.id, e.what());
      std::lock_guard<std::mutex> lk(mu_);
      evict(s);  // a failed session is not trusted again
    }
    job.set_error(JobError(e));
  } catch (const std::exception& e) {
    log().error("serve: slot {}: {}", s.id, e.what());
    std::lock_guard<std::mutex> lk(mu_);
    evict(s);
    job.set_error(JobError(JobFailure::Internal, e.what()));
  }
}

std::vector<float> Scheduler::prefill_scored(Slot& s, const Job& job, std::span<const int32_t> tokens,
                                             std::vector<TokenLogprob>& scored) {
  const Tokenizer& tok = model_.tokenizer();
  const uint32_t n_top = uint32_t(job.req.logprobs);
  scored.clear();
  scored.push_back({tokens[0], tok.token_to_piece(tokens[0]), std::nullopt, {}});  // nothing predicts the first
  std::vector<float> last;
  s.session->prefill_rows(tokens, [&](uint32_t i, std::span<const float> logits) {
    if (i + 1 < tokens.size())
      scored.push_back(token_logprob(tok, logits, tokens[i + 1], n_top));
    else
      last.assign(logits.begin(), logits.end());
  });
  return last;
}

void Scheduler::generate_answer(Slot& s, Job& job, const Plan& plan, std::span<const float> logits,
                                std::vector<TokenLogprob> prompt_logprobs) {
  Sampler sampler(job.req.sampler);
  for (int32_t t : s.tokens) sampler.accept(t);
  StopText stops(job.req.stop);
  GenerateOptions go;
  go.max_tokens = job.req.max_tokens;
  if (job.req.chat) go.stop_tokens = stop_tokens_;
  go.cancel = &job.gen_cancel;
  struct Member {  // while generating, the batcher waits for this slot's tokens
    DecodeBatcher* b;
    explicit Member(DecodeBatcher* b_) : b(b_) {
      if (b) b->join();
    }
    ~Member() {
      if (b) b->leave();
    }
  } member(batcher_.get());
  if (batcher_) go.decode = [&](int32_t token) { return batcher_->decode(*s.session, token); };
  go.on_text = [&](std::string_view text) {
    if (const std::string shown = stops.push(text); !shown.empty()) job.push_text(shown);
  };
  std::vector<TokenLogprob> answer_logprobs;
  std::optional<TokenLogprob> chosen;  // of the token the sampler chose last (an end of generation is not emitted)
  if (job.req.logprobs >= 0)
    go.choose = [&](std::span<const float> lg) {
      const int32_t t = sampler.sample(lg);
      chosen = token_logprob(model_.tokenizer(), lg, t, uint32_t(job.req.logprobs));
      return t;
    };
  go.on_token = [&](int32_t, std::string_view) {
    if (chosen) answer_logprobs.push_back(std::move(*chosen)), chosen.reset();
    return !stops.matched();
  };
  GenerateResult gen;
  if (job.req.max_tokens > 0)  // 0 (echo): the prompt alone; generate() would take 0 as no limit
    generate(*s.session, sampler, logits, go, gen);
  if (const std::string rest = stops.flush(); !rest.empty()) job.push_text(rest);
  // Every emitted token entered the cache (decode_last), so the slot holds the answer too.
  s.tokens.insert(s.tokens.end(), gen.tokens.begin(), gen.tokens.end());
  if (job.req.chat) s.history.generated(gen.text);
  if (gen.stop == StopReason::Cancelled) throw Cancelled();
  Outcome o;
  o.finish_reason = gen.stop == StopReason::MaxTokens || gen.stop == StopReason::ContextFull ? "length" : "stop";
  // As OpenAI counts: prompt_tokens is the whole prompt (the pack's document included), of which
  // cached_tokens were not prefilled for this request.
  o.pack_tokens = job.pack ? job.pack->pack.state.n_past : 0;
  o.prompt_tokens = o.pack_tokens + uint32_t(job.tokens.size());
  o.completion_tokens = uint32_t(gen.tokens.size());
  o.cached_tokens = plan.cached;
  o.kv_policy = kv_policy_name(job.req.kv.policy);
  o.kv_type = kv_types_name(job.req.kv_types);
  if (job.pack) o.pack = job.pack->name;
  o.slot = s.id;
  o.logprobs = std::move(answer_logprobs);
  if (job.req.echo) {
    // Scored: the tokens' pieces, which the text offsets count; else the prompt as given.
    for (const TokenLogprob& t : prompt_logprobs) o.prompt_text += t.piece;
    if (prompt_logprobs.empty())
      o.prompt_text = job.req.prompt_tokens.empty() ? job.req.prompt : model_.tokenizer().decode(job.tokens);
  }
  o.prompt_logprobs = std::move(prompt_logprobs);
  const KvStats kv = s.session->kv_stats();
  o.kv_bytes = kv.retained_bytes, o.kv_bytes_full = kv.full_bytes, o.kv_bytes_allocated = kv.allocated_bytes;
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.kv_stats = kv;
  }
  job.set_outcome(o);
}

void Scheduler::stop() {
  std::unique_lock<std::mutex> lk(mu_);
  stopping_ = true;
  idle_cv_.wait(lk, [&] {
    if (!queue_.empty()) return false;
    for (auto& s : slots_)
      if (s->job) return false;
    return true;
  });
  if (exiting_) return;
  exiting_ = true;
  for (auto& s : slots_) s->cv.notify_one();
  lk.unlock();
  for (auto& s : slots_)
    if (s->thread.joinable()) s->thread.join();
}

SchedulerStats Scheduler::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  SchedulerStats st;
  st.slots = uint32_t(slots_.size());
  st.queued = uint32_t(queue_.size());
  st.available_bytes = available_;
  st.prefill_tokens_saved = saved_tokens_;
  if (batcher_) st.decode_steps = batcher_->steps(), st.decode_sequences = batcher_->sequences();
  for (const auto& s : slots_) {
    st.active += s->job ? 1 : 0;
    st.sessions += s->job || s->session ? 1 : 0;  // a busy slot's session is its thread's to touch
    st.kv_bytes += s->kv_stats.retained_bytes;
    st.kv_bytes_full += s->kv_stats.full_bytes;
    st.kv_bytes_allocated += s->kv_stats.allocated_bytes;
    st.reserved_bytes += s->reserved;
  }
  return st;
}

}  // namespace snapvk::server
