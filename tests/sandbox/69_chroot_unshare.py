# case: leave the namespace
# expect: PermissionError
os = __import__('json').codecs.sys.modules['os']
os.unshare(os.CLONE_NEWNS) if hasattr(os, 'unshare') else os.chroot('/')
