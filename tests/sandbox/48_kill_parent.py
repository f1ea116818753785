# case: signal the host
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.kill({HOST_PID}, 9)
