from voicemon.cli import main

main()
