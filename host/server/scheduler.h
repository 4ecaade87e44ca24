#pragma once
// Slots and admission for `snapvk serve`. A slot is one Session (its KV cache and activations)
// with a thread that does all of that session's device work; HTTP threads only submit jobs and
// wait for or stream their text. A job is admitted when a slot is free and the memory model says
// its session (the compacted size for a compressing policy) fits what the other slots leave of
// the device budget; otherwise it waits in a bounded queue. A conversation that extends what an
// idle slot holds continues from that slot's cache: only the new messages are prefilled. A job
// with a knowledge pack starts from the pack's cache (loaded, not prefilled; admission counts its
// size) and continues only a slot that holds the very same pack.
// Slots run concurrently, so one request's prefill never stalls another's stream for a whole
// prompt (prefill goes in n_batch steps; the device queue interleaves the slots' submissions).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/server/batcher.h"
#include "host/server/openai.h"
#include "host/server/packs.h"
#include "host/session/memory_model.h"
#include "host/session/session.h"
#include "runtime/error.h"

namespace snapvk::server {

using Clock = std::chrono::steady_clock;

struct SchedulerOptions {
  uint32_t parallel = 4;         // slots: requests generating at once
  uint32_t queue_size = 64;      // requests waiting for a slot or memory at most (more: QueueFull)
  double queue_timeout_s = 300;  // a request waits this long at most (the HTTP side withdraws it then)
  SessionOptions session;        // n_ctx, n_batch, KV type of every slot (the KV policy is per request)
  uint32_t decode_batch = 16;    // sequences one batched decode pass takes at most (0 or 1: each slot decodes alone)
};

// Why a job got no answer, in the scheduler's terms: the HTTP side alone turns it into a status.
enum class JobFailure {
  EmptyPrompt,    // the prompt has no tokens
  BadToken,       // a prompt given as token ids has one outside the vocabulary
  PromptTooLong,  // the prompt (after a pack's document) leaves no room in the context for an answer
  OverBudget,     // the request alone needs more device memory than the slots have
  QueueFull,      // queue_size jobs are waiting already
  ShuttingDown,   // stop() was called: no new jobs
  Cancelled,      // cancel(): the client went away
  Session,        // the session or its memory model threw snapvk::Error: JobError::kind and param say what
  Internal,       // any other exception
};

// What submit() throws and a failed job holds: the failure, a one-line message naming the
// problem and, for a session's error, its kind and the option it is about.
struct JobError : std::runtime_error {
  JobError(JobFailure failure, const std::string& message);
  explicit JobError(const Error& e);  // Session; a session's Cancelled is Cancelled
  JobFailure failure;
  ErrorKind kind = ErrorKind::Internal;  // Session: the error's kind
  Param param = Param::None;             // Session: the option an InvalidArgument is about
};

// One request from submission to its last token: shared by the HTTP thread that waits for it or
// streams it and the slot thread that runs it.
struct Job {
  enum class State { Queued, Running, Done };

  GenerationRequest req;
  std::shared_ptr<const ServedPack> pack;  // req.pack's (null: none); req.kv is then its policy
  std::vector<int32_t> tokens;             // the whole prompt tokenized (chat: rendered by the template), after the pack
  Clock::time_point arrived = Clock::now();
  std::atomic<bool> gen_cancel{false};  // the generation loop's cancel flag

  // Slot thread: text as it is generated, then the end.
  void start(int slot);
  void push_text(const std::string& text);
  void set_outcome(const Outcome& o);  // the result, seen once close() ends the job
  void set_error(const JobError& e);
  void close();
  void fail(const JobError& e);  // set_error and close

  // HTTP thread: waits until the job runs or ends (false: `timeout` passed first).
  bool wait_started(std::chrono::milliseconds timeout);
  // Waits up to `timeout` for new text or the end; moves the new text into `text`. True when done.
  bool next(std::string& text, std::chrono::milliseconds timeout);
  bool wait_done(std::chrono::milliseconds timeout);  // false: still running after timeout
  State state();
  std::optional<JobError> error();
  Outcome outcome();

 private:
  std::mutex m_;
  std::condition_variable cv_;
  State state_ = State::Queued;
  std::string text_;  // generated, not yet taken by next()
  Outcome outcome_;
  std::optional<JobError> error_;
};

// What /metrics reports of the slots.
struct SchedulerStats {
  uint32_t slots = 0, active = 0, sessions = 0, queued = 0;
  uint64_t kv_bytes = 0, kv_bytes_full = 0, kv_bytes_allocated = 0;  // over every slot's session
  uint64_t reserved_bytes = 0, available_bytes = 0;                  // the memory model's accounting
  uint64_t prefill_tokens_saved = 0;                                 // tokens a slot's cache already held
  uint64_t decode_steps = 0, decode_sequences = 0;  // batched decode: passes run and tokens decoded in them
};

class Scheduler {
 public:
  Scheduler(const Model& model, const ChatTemplate& tmpl, const SchedulerOptions& o);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Tokenizes the job's prompt and queues it. Throws JobError: EmptyPrompt, PromptTooLong,
  // ShuttingDown once stop() was called, OverBudget when the request alone needs more device
  // memory than the slots have, QueueFull, or Session when its KV policy refuses the prompt.
  void submit(const std::shared_ptr<Job>& job);
  // The client is gone: a queued job leaves the queue; a running one stops at its next batch
  // or token.
  void cancel(const std::shared_ptr<Job>& job);
  // Takes a job that is still queued out of the queue (true), for a wait that timed out.
  bool withdraw(const std::shared_ptr<Job>& job);
  // Refuses new jobs, lets queued and running ones finish, then ends the slot threads.
  void stop();
  SchedulerStats stats();
  const SchedulerOptions& options() const { return o_; }

 private:
  struct Slot;
  struct Plan;
  void slot_loop(Slot& s);
  void run_job(Slot& s, Job& job, const Plan& plan);
  void generate_answer(Slot& s, Job& job, const Plan& plan, std::span<const float> logits,
                       std::vector<TokenLogprob> prompt_logprobs);
  // Prefills a prompt to score (echo with logprobs): the log-probability of each of its tokens
  // after those before it into `scored`; returns the logits after the last one.
  std::vector<float> prefill_scored(Slot& s, const Job& job, std::span<const int32_t> tokens,
                                    std::vector<TokenLogprob>& scored);
  void try_admit();                             // under mu_
  bool admit(const std::shared_ptr<Job>& job);  // under mu_
  std::optional<Plan> continuation(const Slot& s, const Job& job) const;
  SessionOptions session_options(const GenerationRequest& r, bool rows, Slot& s) const;
  uint64_t row_logits_bytes() const;  // a session's logits for every row of a prefill batch
  // The memory model of a new session compressing (or not) an L-token prompt; throws Error.
  MemoryEstimate fresh_estimate(const GenerationRequest& r, uint32_t L) const;
  // Device bytes of a session holding `p`: its cache and the activations.
  uint64_t pack_steady_bytes(const ServedPack& p) const;
  uint64_t reserved_except(const Slot* s) const;  // under mu_
  // A compressing prefill's transient buffers: admission counts each session's own size (and
  // that its prefill fits alone); prefills that would not fit together wait here for each other.
  class PrefillMemory {
   public:
    PrefillMemory(Scheduler& sch, Slot& s, uint64_t bytes);  // throws Cancelled if cancelled meanwhile
    ~PrefillMemory();
    PrefillMemory(const PrefillMemory&) = delete;
    PrefillMemory& operator=(const PrefillMemory&) = delete;

   private:
    Scheduler& sch_;
    uint64_t bytes_;
  };
  void evict(Slot& s);  // under mu_: frees an idle slot's session

  const Model& model_;
  const ChatTemplate& tmpl_;
  SchedulerOptions o_;
  uint64_t available_ = 0;  // device bytes the slots may use (the budget less weights; 0: no budget)
  std::vector<int32_t> stop_tokens_;
  std::unique_ptr<DecodeBatcher> batcher_;  // null: each slot decodes on its own
  std::vector<std::unique_ptr<Slot>> slots_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::mutex mu_;
  std::condition_variable idle_cv_;       // a job finished
  std::condition_variable transient_cv_;  // a prefill's transient buffers were freed, or a job cancelled
  uint64_t transients_ = 0;               // bytes of the prefills running now (PrefillMemory)
  bool stopping_ = false, exiting_ = false;
  uint64_t tick_ = 0, saved_tokens_ = 0;
};

}  // namespace snapvk::server
