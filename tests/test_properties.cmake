# Properties of discovered tests, set after discovery (tests/CMakeLists.txt).
#
# Costs. ctest -jN starts tests in descending COST. A fresh build has no measured costs, so without these
# the longest tests start wherever discovery put them, and one that starts last keeps a single
# core busy for minutes after the rest are done. Seconds under ASan on the 2-core machine;
# only the order matters. ctest refines them from its own measurements on later runs.
foreach(test_and_cost
    "SmolLM2.DefaultSnapkvAtBudget128FindsTheNeedleAtEveryDepthOf1K;150"
    "SessionReliability.LongSoakStaysAtTheModelledMemory;100"
    "EndlessSmolLM2.ChatFollowsAFullCacheConversation;91"
    "SmolLM2.GreedyTokensMatchTheFloat64ReferenceWithAnF32Cache;69"
    "SmolLM2.F16CacheLogitsStayCloseAndTokensAgreeUntilACloseCall;61"
    "SmolLM2.RotatedFourBitCacheBeatsQ4_0AtEqualBits;45"
    "Gemma3Real.EveryRowsLogitsOfASlicedBatchEqualThoseOfUnslicedBatches;60"
    "Gemma3Real.LongPromptBeyondTheSlidingWindowWithFullAndSnapkvCaches;50"
    "SmolLM2Pack.FullF32PackIsBitExactAndSnapKVStateIsByteExact;27"
    "Gemma3Real.PlainQuestionsGetSensibleGreedyAnswers;27"
    "SnapkvKernels.PoolingAndWordsAcrossTheLoopLimitMatchReference;20"
    "SnapkvKernels.H2oVotesOfEveryPromptQueryMatchReference;15"
    "Serve.SmolLM2ChatStreamedAndNot;15"
    "BadInput.BadTokensFile;14"
    "Stories.GreedyTokensWithF16CacheReportAgreement;13"
    "Stories.GreedyTokensMatchLlama2cWithF32Cache;13"
    "Serve.CompressedSessionsRunManyAtOnceWithinTheBudget;13"
    "FidelityCli.EvalTasksAndPerplexityRun;13"
    "EndlessTest.HundredTurnsStayWithinTheBudgetWithFlatMemory;13")
  list(GET test_and_cost 0 test)
  list(GET test_and_cost 1 cost)
  set_tests_properties("${test}" PROPERTIES COST ${cost})
endforeach()

# Real-model fidelity tests: their time is the GPU's (lavapipe's) work on real models, which
# neither sanitizer sees, and each one's host code runs under the sanitizers in a cheaper test
# of the same paths: needle prompts (NeedleTest.*), greedy decoding with f32/f16 caches
# (Stories.*), endless chat (EndlessTest.*), sliding-window layers with SnapKV (SynthGemma3.*),
# the LM head split across bindings (KernelMatmul.SplitsOperandsLargerThanOneBinding), and the
# SmolLM2 and Gemma 3 loaders, tokenizers and chat templates (SmolLM2Pack.*, Serve.SmolLM2Chat*,
# serve_openai_client, Gemma3Real.LoadsWithItsShape, Gemma3Real.PlainQuestions*), and the KV types'
# formats and rotation (KvFormat.*, KvStoreKernel.*, HadamardKernel.*, Fidelity.Perplexity*). The Release
# pass runs them under synchronization validation; the sanitizer pass leaves them out
# (ctest -LE fidelity, tools/test-sanitizers.sh).
foreach(test
    SmolLM2.DefaultSnapkvAtBudget128FindsTheNeedleAtEveryDepthOf1K
    SmolLM2.GreedyTokensMatchTheFloat64ReferenceWithAnF32Cache
    SmolLM2.F16CacheLogitsStayCloseAndTokensAgreeUntilACloseCall
    SmolLM2.RotatedFourBitCacheBeatsQ4_0AtEqualBits
    EndlessSmolLM2.ChatFollowsAFullCacheConversation
    Gemma3Real.LongPromptBeyondTheSlidingWindowWithFullAndSnapkvCaches
    Gemma3Real.EveryRowsLogitsOfASlicedBatchEqualThoseOfUnslicedBatches)
  set_tests_properties("${test}" PROPERTIES LABELS fidelity)
endforeach()

# Kernels at shapes past llvmpipe's loop limit: long because their CPU references walk 65K+
# positions, to make lavapipe run each loop past its limit; the host's splits into passes that
# they reach run under the sanitizers at small shapes (the `_split` SnapkvKernels shapes,
# AttentionKernel.PrefillInPassesMatchesReference). The sanitizer pass leaves them out too.
foreach(test
    SnapkvKernels.PoolingAndWordsAcrossTheLoopLimitMatchReference
    SnapkvKernels.H2oVotesOfEveryPromptQueryMatchReference)
  set_tests_properties("${test}" PROPERTIES LABELS loop-limit)
endforeach()
