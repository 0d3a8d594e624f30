from valuedrift.cli import main

main()
