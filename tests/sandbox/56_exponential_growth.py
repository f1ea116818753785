# case: exponential growth
# expect: MemoryError|died|restarted|TimeoutError
# flags: memory
s = 'x'
while True:
    s = s + s
