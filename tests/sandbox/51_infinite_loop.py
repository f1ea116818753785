# case: infinite loop in Python
# expect: TimeoutError
# flags: slow
while True:
    pass
