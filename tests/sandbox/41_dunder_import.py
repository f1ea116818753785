# case: __import__ of a forbidden module
# expect: ImportError
__import__('subprocess').run(['id'])
