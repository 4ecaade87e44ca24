#pragma once
// CPU reference of the compression passes (docs/snapkv.md steps 3-7), scalar and plainly
// written: the oracle for the GPU selection. Keys are one layer's rotated keys as [n_kv][L][hd],
// queries the voting queries as [n_q][n_head][hd] (the last n_q prompt positions).
#include <cstdint>
#include <vector>

#include "host/kv/kv_policy.h"

namespace snapvk::ref {

// votes[h][j], j < P: GQA aggregation of sum over voting queries of softmax(q k^T / sqrt(hd))[j].
std::vector<double> window_votes(const std::vector<float>& q, const std::vector<float>& k, uint32_t L, uint32_t n_q,
                                 uint32_t P, uint32_t n_head, uint32_t n_kv, uint32_t hd, GqaAgg agg);
// 1-D pooling along positions per head (odd kernel, stride 1, padding k/2; avg counts the padding).
// ahead: the window also reaches `ahead` positions further back (a vote lends to what follows it).
std::vector<double> pool1d(const std::vector<double>& v, uint32_t P, uint32_t n_kv, uint32_t kernel, bool avg,
                           uint32_t ahead = 0);
// Word completion: each position takes the best score of the positions of its word (words[t] = 1:
// position t continues the word of t - 1), at most `reach` positions either way.
std::vector<double> complete_words(const std::vector<double>& s, uint32_t P, uint32_t n_kv,
                                   const std::vector<uint32_t>& words, uint32_t reach);
// The `count` largest of scores[0..n), ties to the lower position, ascending.
std::vector<uint32_t> topk(const double* scores, uint32_t n, uint32_t count);

// Retained positions per KV head of one layer (ascending, window included), as the policy
// decides for a prompt of L tokens. `scores_out`, when given, receives the scores the final
// selection ranked ([n_kv][P], or the Ada-KV layer-wide list) for tie-tolerant comparisons.
// `words` ([L], Tokenizer::word_continuations): the prompt's words, for pol.complete_words.
std::vector<std::vector<uint32_t>> select_layer(const KvPolicyOptions& pol, uint32_t layer, uint32_t n_layer,
                                                const std::vector<float>& q, const std::vector<float>& k, uint32_t L,
                                                uint32_t n_head, uint32_t n_kv, uint32_t hd,
                                                std::vector<double>* scores_out = nullptr,
                                                const std::vector<uint32_t>* words = nullptr);

}  // namespace snapvk::ref
