# case: a huge string
# expect: MemoryError
x = 'x' * (10 ** 12)
