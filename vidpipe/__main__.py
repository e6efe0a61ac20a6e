from vidpipe.cli.main import main

main()
