# case: a thread that outlives its cell
# expect: can't start new thread
os = __import__('json').codecs.sys.modules['os']
t = os.sys.modules['_thread']
t.start_new_thread(lambda: [open('{CANARY}', 'w') for _ in iter(int, 1)], ())
