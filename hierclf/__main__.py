from hierclf.cli import main

main()
