# case: an infinite loop that swallows the interrupt
# expect: TimeoutError
# flags: slow
while True:
    try:
        while True:
            pass
    except BaseException:
        pass
