# ctest -jN starts tests in descending COST. A fresh build has no measured costs, so without these
# the longest tests start wherever discovery put them, and one that starts last keeps a single
# core busy for minutes after the rest are done. Seconds under ASan on the 2-core machine;
# only the order matters. ctest refines them from its own measurements on later runs.
foreach(test_and_cost
    "SmolLM2.DefaultSnapkvAtBudget128FindsTheNeedleAtEveryDepthOf1K;150"
    "SessionReliability.LongSoakStaysAtTheModelledMemory;100"
    "EndlessSmolLM2.ChatFollowsAFullCacheConversation;91"
    "SmolLM2.GreedyTokensMatchTheFloat64ReferenceWithAnF32Cache;69"
    "SmolLM2.F16CacheLogitsStayCloseAndTokensAgreeUntilACloseCall;61"
    "Gemma3Real.EveryRowsLogitsOfASlicedBatchEqualThoseOfUnslicedBatches;60"
    "Gemma3Real.LongPromptBeyondTheSlidingWindowWithFullAndSnapkvCaches;50"
    "SmolLM2Pack.FullF32PackIsBitExactAndSnapKVStateIsByteExact;27"
    "Gemma3Real.PlainQuestionsGetSensibleGreedyAnswers;27"
    "SnapkvKernels.PoolingAndWordsAcrossTheLoopLimitMatchReference;20"
    "SnapkvKernels.H2oVotesOfEveryPromptQueryMatchReference;15"
    "serve_openai_client;25"
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
