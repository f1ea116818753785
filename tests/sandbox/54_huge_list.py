# case: a huge list
# expect: MemoryError
x = [0] * (10 ** 11)
