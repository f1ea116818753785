# case: print without end
# expect: characters cut
# flags: slow
while True:
    print('flood ' * 100)
