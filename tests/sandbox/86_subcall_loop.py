# case: sub-calls in a loop that never ends: their time is not the cell's own, so only the wall limit stops it
# expect: wall limit of 1 s, sub-calls included
# args: --cell-wall 1 --max-subcalls none
while True:
    llm_query('sub-call: again')
