from adtier.cli import main

main()
