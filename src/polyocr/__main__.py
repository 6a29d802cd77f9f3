from polyocr.cli import main

main()
