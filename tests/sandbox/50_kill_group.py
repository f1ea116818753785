# case: signal the process group
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.killpg(0, 9)
