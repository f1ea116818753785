# case: one rlm_query_batched of 65,536 prompts at depth 2: as many child RLMs
# expect: a batch of 65536 child RLMs is more than one batch may start \(--max-child-batch 256\)
# args: --max-depth 2
print(rlm_query_batched(['child %d' % i for i in range(65536)])[0])
