# case: overwrite llm_query, context and answer
# expect: overwritten
llm_query = None
context = 'fake'
answer = 42
FINAL_VAR = None
print('overwritten')
