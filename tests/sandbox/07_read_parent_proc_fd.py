# case: read the host's open files through /proc
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
print(os.listdir('/proc/{HOST_PID}/fd'))
