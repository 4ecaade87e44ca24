#pragma once
// Endless chat (docs/packs.md): a conversation of any length within a KV budget. Its session's
// cache holds kv.budget entries per head plus one turn (n_ctx rows per head, allocated once);
// end_turn() compacts it again, in place, when it holds more, with the last kv.window positions
// voting. Positions go on past n_ctx.
#include <cstdint>

#include "host/session/session.h"

namespace snapvk {

// Whether an endless chat can compact its cache again with this policy (uniform heads, votes of
// the window alone): snapkv, pyramidkv, streamingllm.
bool compacts_again(KvPolicy p);

class EndlessChat {
 public:
  // Needs snapkv, pyramidkv or streamingllm and a kv.budget (not a ratio) below n_ctx; throws
  // InvalidArgument naming the option otherwise.
  EndlessChat(const Model& model, const SessionOptions& opts);

  // The conversation: prompts, answers, packs and resets go through it as through any session.
  Session& session() { return session_; }
  const Session& session() const { return session_; }

  // End of a turn: a cache over its budget is compacted again (every global layer, in place;
  // kept keys keep their positions and RoPE). Returns whether it was.
  bool end_turn();

 private:
  Session session_;
  CommandStream cs_;
  // Allocated once: each global layer's last W rotated queries (the session's query sink,
  // [n_layer][W][q_dim] f32), them in position order ([W][q_dim]), and a layer's rows to compact
  // from ([n_kv][n_ctx] K and V rows, its heads table).
  Buffer q_ring_, q_win_, scratch_k_, scratch_v_, scratch_heads_;
};

}  // namespace snapvk
