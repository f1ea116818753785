# case: one huge line
# expect: characters cut
print('y' * 100_000_000)
